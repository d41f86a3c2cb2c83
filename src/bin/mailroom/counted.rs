//! A count of the contacts a long command has taken so far, shown by a spinner on a terminal.
//! Reading, checking and importing a million contacts takes many seconds before `send` prints
//! anything else, and a minute or more for `check`. A silent terminal looks like a hang. Off a
//! terminal nothing is shown, because those commands print their summary when they are done.
//! This module only counts and draws; it must not change what passes through it.

use std::time::Duration;

/// How many contacts pass between two updates of the counter (an update takes a lock).
pub const COUNT_EVERY: u64 = 1024;

/// `inner`'s items, unchanged and in order, counted.
pub struct Counted<I> {
    inner: I,
    taken: u64,
    spinner: Option<indicatif::ProgressBar>,
}

impl<I> Counted<I> {
    /// `what` names the work on the spinner ("checking the contacts"); `terminal`: whether
    /// stderr is one (no spinner otherwise).
    pub fn new(inner: I, what: &str, terminal: bool) -> Counted<I> {
        let spinner = terminal.then(|| {
            let spinner = indicatif::ProgressBar::new_spinner();
            let template = format!("{{spinner}} {what}: {{human_pos}} so far ({{elapsed}})");
            let style = indicatif::ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            spinner.set_style(style);
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        Counted {
            inner,
            taken: 0,
            spinner,
        }
    }

    /// Removes the spinner; returns how many items went through.
    pub fn finish(self) -> u64 {
        if let Some(spinner) = self.spinner {
            spinner.finish_and_clear();
        }
        self.taken
    }
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.taken += 1;
        if self.taken.is_multiple_of(COUNT_EVERY)
            && let Some(spinner) = &self.spinner
        {
            spinner.set_position(self.taken);
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_passes_through_in_order_and_is_counted() {
        let rows: Vec<u64> = (0..3 * COUNT_EVERY + 5).collect();
        let mut counted = Counted::new(rows.clone().into_iter(), "counting", false);
        let seen: Vec<u64> = (&mut counted).collect();
        assert_eq!(seen, rows);
        assert_eq!(counted.finish(), 3 * COUNT_EVERY + 5);
    }

    #[test]
    fn the_spinner_shows_the_count_reached_and_is_removed_at_the_end() {
        let mut counted = Counted::new(0..2 * COUNT_EVERY + 1, "counting", true);
        // Off a terminal indicatif draws nothing, but the spinner still holds its position.
        let spinner = counted
            .spinner
            .clone()
            .expect("a spinner when asked for one");
        assert_eq!((&mut counted).count() as u64, 2 * COUNT_EVERY + 1);
        assert_eq!(spinner.position(), 2 * COUNT_EVERY);
        counted.finish();
        assert!(spinner.is_finished());
    }
}
