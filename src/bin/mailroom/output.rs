//! The commands' own lines on standard output and standard error, written so that no failed
//! write panics the process, as `println!` and `eprintln!` do: `mailroom check CAMPAIGN | head`
//! closes the pipe after ten lines, and the rest of the work (a key already written, a send
//! already recorded) must still end normally.
//!
//! A reader that went away (`BrokenPipe`) is not an error of the command: later lines to that
//! stream are dropped without a write. Any other failure to write standard output (a full disk
//! behind `> file`) is remembered and reported once, on standard error, when the command ends
//! ([`finish`]), because the output the user asked for is incomplete. A failed write to standard
//! error has nowhere to be reported and is dropped.
//!
//! Commands that stream large outputs (`report`, `preview`, `bounces`) write through their own
//! locked writers and return the error; this module is for the lines the `out!`, `outln!`,
//! `err!` and `errln!` macros print. It must not end the process (a send goes on recording when
//! its reader leaves) nor keep a failure to write standard output from the user.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// `print!` that never panics (see the module docs).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*), false)
    };
}

/// `println!` that never panics (see the module docs).
macro_rules! outln {
    () => {
        $crate::output::stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*), true)
    };
}

/// `eprint!` that never panics (see the module docs).
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*), false)
    };
}

/// `eprintln!` that never panics (see the module docs).
macro_rules! errln {
    () => {
        $crate::output::stderr(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*), true)
    };
}

/// The reader of standard output went away.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// The reader of standard error went away.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);
/// The first failure to write standard output for another reason than a reader gone.
static STDOUT_FAILED: OnceLock<String> = OnceLock::new();

/// Writes `args` (and a newline when `line`) to standard output.
pub fn stdout(args: fmt::Arguments<'_>, line: bool) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let written = write(&mut io::stdout().lock(), args, line);
    if let Err(e) = written {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STDOUT_GONE.store(true, Ordering::Relaxed);
        } else {
            let _ = STDOUT_FAILED.set(e.to_string());
        }
    }
}

/// Writes `args` (and a newline when `line`) to standard error.
pub fn stderr(args: fmt::Arguments<'_>, line: bool) {
    if STDERR_GONE.load(Ordering::Relaxed) {
        return;
    }
    let written = write(&mut io::stderr().lock(), args, line);
    if written.is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe) {
        STDERR_GONE.store(true, Ordering::Relaxed);
    }
}

fn write(to: &mut impl Write, args: fmt::Arguments<'_>, line: bool) -> io::Result<()> {
    to.write_fmt(args)?;
    if line {
        to.write_all(b"\n")?;
    }
    Ok(())
}

/// The command's exit code, once standard output is flushed: when a line could not be written
/// for another reason than a reader gone, says so on standard error, and a command that
/// otherwise succeeded exits 1 (finished with problems: its output is incomplete).
pub fn finish(code: ExitCode) -> ExitCode {
    if !STDOUT_GONE.load(Ordering::Relaxed)
        && let Err(e) = io::stdout().lock().flush()
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        let _ = STDOUT_FAILED.set(e.to_string());
    }
    match STDOUT_FAILED.get() {
        Some(e) => {
            errln!("mailroom: could not write everything to standard output: {e}");
            if code == ExitCode::SUCCESS {
                ExitCode::from(1)
            } else {
                code
            }
        }
        None => code,
    }
}

/// Whether `e` comes from writing to a reader that went away (`| head`): for the commands that
/// stream through their own writer, that ends the output, not the command with an error.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
