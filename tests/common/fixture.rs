//! Campaign folders for CLI tests: a throwaway copy of `tests/fixtures/campaigns/base` that a
//! test breaks in one place (a key, a file, a CSV row) before running the binary on it.

use std::path::{Path, PathBuf};

/// The folder of the base campaign fixture.
pub fn base_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/campaigns/base")
}

/// A throwaway copy of the base campaign.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl Fixture {
    pub fn base() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&base_dir(), dir.path());
        Fixture { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> &Fixture {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    pub fn remove(&self, rel: &str) -> &Fixture {
        std::fs::remove_file(self.path().join(rel)).unwrap();
        self
    }

    /// Replaces exactly one occurrence of `from` in campaign.toml.
    pub fn edit_toml(&self, from: &str, to: &str) -> &Fixture {
        let t = self.read("campaign.toml");
        assert_eq!(t.matches(from).count(), 1, "{from:?} must occur once");
        self.write("campaign.toml", t.replacen(from, to, 1))
    }

    /// Appends `text` (whole tables) to campaign.toml.
    pub fn append_toml(&self, text: &str) -> &Fixture {
        let t = self.read("campaign.toml");
        self.write("campaign.toml", format!("{t}\n{text}\n"))
    }

    pub fn csv(&self, contents: impl AsRef<[u8]>) -> &Fixture {
        self.write("contacts.csv", contents)
    }

    /// `text` with this folder's path written `[DIR]`, so snapshots do not depend on where the
    /// temporary folder was made.
    pub fn redact(&self, text: &str) -> String {
        super::redact_dir(text, self.path())
    }
}
