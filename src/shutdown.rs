//! Graceful stop for long runs: the first Ctrl-C (or SIGTERM) asks the run to stop claiming new
//! work and lets in-flight SMTP transactions finish; a second one exits the process at once
//! (code 130).
//!
//! This module only carries the signal; it must not know what a run does with it. Library code
//! receives a [`Shutdown`] and polls [`Shutdown::is_triggered`] or awaits [`Shutdown::wait`];
//! tests trigger it by hand.

use tokio::sync::watch;

/// A cloneable stop flag that can be awaited.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A flag nobody has triggered yet.
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    /// Asks everyone holding a clone to stop.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// True once [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which cannot happen while `self` holds one.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Wires Ctrl-C and (on Unix) SIGTERM to this flag: the first of them triggers it, the
    /// second exits the process with code 130 without waiting for anything. SIGTERM is what
    /// `systemctl stop`, `timeout` and CI cancellation send: it gets the same graceful stop, so
    /// outcomes already answered by the relay are committed instead of lost.
    /// Must be called inside a tokio runtime.
    pub fn install_ctrl_c(&self, on_first: impl Fn() + Send + 'static) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut signals = Signals::new();
            if !signals.next().await {
                return;
            }
            this.trigger();
            on_first();
            if signals.next().await {
                std::process::exit(130);
            }
        });
    }
}

/// The stop signals this process listens to.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        Signals {
            // Without a SIGTERM handler (cannot register), Ctrl-C still works.
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// Waits for the next Ctrl-C or SIGTERM; false when no signal can be received.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            return tokio::select! {
                r = tokio::signal::ctrl_c() => r.is_ok(),
                r = term.recv() => r.is_some(),
            };
        }
        tokio::signal::ctrl_c().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_resolves_for_every_clone_once_triggered() {
        let stop = Shutdown::new();
        let other = stop.clone();
        assert!(!other.is_triggered());
        let waiter = tokio::spawn(async move {
            other.wait().await;
            other.is_triggered()
        });
        stop.trigger();
        assert!(waiter.await.unwrap_or(false));
        // Already triggered: returns at once.
        stop.wait().await;
    }
}
