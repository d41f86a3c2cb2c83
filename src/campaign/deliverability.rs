//! The deliverability keys of `campaign.toml`: `[bounces] notify` (which DSNs to ask relays for),
//! `[guard]` (the circuit breaker's limits) and `[providers]` (MX lookups of recipient domains).
//! Their types, defaults, parsing and the validation that needs the file alone; `config` holds
//! them in [`super::config::Config`]. It must not do I/O or know how they are used.

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::model::DsnNotify;

/// `[guard]`: the circuit breaker. Rates are percentages (`5.0` = 5%).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GuardSection {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Hard bounces / (accepted + hard + soft) over the window.
    #[serde(default = "default_hard")]
    pub max_hard_bounce_rate: f64,
    /// Complaints (imported ARF reports) / recipients accepted by the relay.
    #[serde(default = "default_complaint")]
    pub max_complaint_rate: f64,
    /// Deferred / attempts over the window.
    #[serde(default = "default_deferral")]
    pub max_deferral_rate: f64,
    /// Attempts before a rate applies.
    #[serde(default = "default_min_sample")]
    pub min_sample: u32,
    /// The latest attempts a rate is computed over.
    #[serde(default = "default_window")]
    pub window: u32,
}

impl Default for GuardSection {
    fn default() -> Self {
        GuardSection {
            enabled: true,
            max_hard_bounce_rate: default_hard(),
            max_complaint_rate: default_complaint(),
            max_deferral_rate: default_deferral(),
            min_sample: default_min_sample(),
            window: default_window(),
        }
    }
}

/// `[providers]`: who hosts each recipient domain's mail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProvidersSection {
    /// Look the MX of recipient domains up (in the background of a send) to name their
    /// provider; `false`: only well-known consumer domains get one.
    #[serde(default = "yes")]
    pub lookup: bool,
}

impl Default for ProvidersSection {
    fn default() -> Self {
        ProvidersSection { lookup: true }
    }
}

fn yes() -> bool {
    true
}
fn default_hard() -> f64 {
    5.0
}
fn default_complaint() -> f64 {
    0.3
}
fn default_deferral() -> f64 {
    20.0
}
fn default_min_sample() -> u32 {
    200
}
fn default_window() -> u32 {
    1000
}

/// `[bounces] notify`: a list of `"success"`, `"failure"`, `"delay"`, or `["never"]` alone.
pub(super) fn de_notify<'de, D: Deserializer<'de>>(d: D) -> Result<DsnNotify, D::Error> {
    let words: Vec<String> = Vec::deserialize(d)?;
    parse_notify(&words).map_err(de::Error::custom)
}

pub(super) fn default_notify() -> DsnNotify {
    DsnNotify::DEFAULT
}

fn parse_notify(words: &[String]) -> Result<DsnNotify, String> {
    if words.is_empty() {
        return Err(
            "notify is empty: list when to get a report, e.g. [\"failure\", \"delay\"], or [\"never\"]"
                .into(),
        );
    }
    let mut notify = DsnNotify::NEVER;
    let mut never = false;
    for word in words {
        match word.to_ascii_lowercase().as_str() {
            "success" => notify.success = true,
            "failure" => notify.failure = true,
            "delay" => notify.delay = true,
            "never" => never = true,
            _ => {
                return Err(format!(
                    "notify: unknown value {word:?} (use \"success\", \"failure\", \"delay\" or \"never\")"
                ));
            }
        }
    }
    if never && notify != DsnNotify::NEVER {
        return Err("notify: \"never\" must be alone (RFC 3461 §4.1)".into());
    }
    Ok(notify)
}

/// The problem with a `[guard]` section, as (key, message, fix).
pub(super) fn check_guard(g: &GuardSection) -> Result<(), (&'static str, String, &'static str)> {
    for (key, value) in [
        ("max_hard_bounce_rate", g.max_hard_bounce_rate),
        ("max_complaint_rate", g.max_complaint_rate),
        ("max_deferral_rate", g.max_deferral_rate),
    ] {
        if !(value > 0.0 && value <= 100.0) {
            return Err((
                key,
                format!("{key} = {value} is not a percentage above 0 and at most 100"),
                "Rates are percentages: e.g. max_hard_bounce_rate = 5.0 for 5%; set enabled = false to turn the guard off.",
            ));
        }
    }
    if g.min_sample == 0 {
        return Err((
            "min_sample",
            "min_sample must be at least 1".into(),
            "Set min_sample = 200 (the default) or another number of attempts.",
        ));
    }
    if g.window < g.min_sample || g.window > 1_000_000 {
        return Err((
            "window",
            format!(
                "window = {} must be at least min_sample ({}) and at most 1000000",
                g.window, g.min_sample
            ),
            "Set window = 1000 (the default): the rates are computed over that many latest attempts.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn notify_lists() {
        let ok: &[(&[&str], &str)] = &[
            (&["failure", "delay"], "FAILURE,DELAY"),
            (&["success"], "SUCCESS"),
            (&["SUCCESS", "failure", "delay"], "SUCCESS,FAILURE,DELAY"),
            (&["never"], "NEVER"),
            (&["failure", "failure"], "FAILURE"),
        ];
        for (list, keyword) in ok {
            assert_eq!(
                parse_notify(&words(list)).unwrap().keyword(),
                *keyword,
                "{list:?}"
            );
        }
        for bad in [&["never", "failure"][..], &[][..], &["sometimes"][..]] {
            assert!(parse_notify(&words(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn guard_limits_are_checked() {
        assert!(check_guard(&GuardSection::default()).is_ok());
        let bad = [
            GuardSection {
                max_hard_bounce_rate: 0.0,
                ..GuardSection::default()
            },
            GuardSection {
                max_complaint_rate: 150.0,
                ..GuardSection::default()
            },
            GuardSection {
                max_deferral_rate: f64::NAN,
                ..GuardSection::default()
            },
            GuardSection {
                min_sample: 0,
                ..GuardSection::default()
            },
            GuardSection {
                window: 100,
                ..GuardSection::default()
            },
        ];
        for g in bad {
            assert!(check_guard(&g).is_err(), "{g:?}");
        }
    }
}
