//! The `campaign.toml` tables of campaign operations (issue 15): `[test]` (test sends),
//! `[seeds]` and `[schedule]`, with their defaults. Their validation runs with the rest of the
//! file in `Config::validate`; what a window means is `crate::schedule`'s. No I/O here.

use std::path::PathBuf;

use serde::Deserialize;

/// `[schedule]`: when sending is allowed (see `crate::schedule`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ScheduleSection {
    /// An IANA zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// Weekdays (`"mon"` ... `"sun"`); empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `"HH:MM-HH:MM"`, local to the zone; default the whole day.
    #[serde(default = "default_hours")]
    pub hours: String,
    /// `"YYYY-MM-DD HH:MM"`, local to the zone: nothing is sent before it.
    #[serde(default)]
    pub not_before: Option<String>,
}

/// `[test]`: how `send --test` marks its copies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TestSection {
    /// Put before the subject of a test send; `""` for none.
    #[serde(default = "default_test_prefix")]
    pub subject_prefix: String,
}

impl Default for TestSection {
    fn default() -> Self {
        TestSection {
            subject_prefix: default_test_prefix(),
        }
    }
}

/// `[seeds]`: your own mailboxes that get the campaign's message when a run claims its first
/// recipient and when it finishes (recorded as test sends), to see where it lands.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SeedsSection {
    #[serde(default)]
    pub addresses: Vec<String>,
    /// A file of addresses, one a line (`#` starts a comment); absolute after load.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

impl ScheduleSection {
    /// The window this section describes; `Err` names the key and the reason.
    ///
    /// # Errors
    /// See [`crate::schedule::Window::new`].
    pub fn window(&self) -> Result<crate::schedule::Window, (&'static str, String)> {
        crate::schedule::Window::new(
            &self.timezone,
            &self.days,
            &self.hours,
            self.not_before.as_deref(),
        )
    }
}

fn default_hours() -> String {
    "00:00-24:00".to_owned()
}
fn default_test_prefix() -> String {
    "[TEST] ".to_owned()
}
