//! Dashboard state and key handling. No I/O: `App::handle_key` turns a key into state changes
//! and, when the outside world must act, an `Action`; `App::apply` takes a fetched snapshot.
//! Rendering (`view.rs`) reads this state and nothing else.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::report::{
    CampaignReport, CampaignSummary, DiagnosisRow, DomainRow, DrillDown, Focus, HistoryEntry,
    ProviderRow, ReasonRow, Thresholds,
};

/// What the event loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Leave the dashboard (restoring the terminal).
    Quit,
    /// Fetch a new snapshot now: the campaign or the drill-down changed.
    Reload,
}

/// One read of the ledger: everything a frame shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Unix milliseconds when it was read.
    pub taken_at: i64,
    pub campaigns: Vec<CampaignSummary>,
    /// The selected campaign's numbers; `None` when the ledger has no campaign.
    pub report: Option<CampaignReport>,
    /// The open drill-down's rows, when one is open.
    pub drill: Option<DrillDown>,
}

/// What the last fetch found.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Nothing read yet.
    Loading,
    /// The ledger file does not exist (yet).
    Missing,
    /// Reading failed; the message says why (a refresh retries).
    Failed(String),
    Ready(Box<Snapshot>),
}

/// The panes Tab moves between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Campaigns,
    Domains,
    Reasons,
    Events,
    /// The provider table (beside the domains on wide terminals).
    Providers,
}

impl Pane {
    const ORDER: [Pane; 5] = [
        Pane::Campaigns,
        Pane::Domains,
        Pane::Reasons,
        Pane::Events,
        Pane::Providers,
    ];

    fn index(self) -> usize {
        Pane::ORDER.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// The title shown on the pane.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Campaigns => "Campaigns",
            Pane::Domains => "Domains",
            Pane::Reasons => "Reasons",
            Pane::Events => "Recent",
            Pane::Providers => "Providers",
        }
    }
}

/// Columns of the domain table, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainColumn {
    Domain,
    Recipients,
    Accepted,
    Deferred,
    Hard,
    Soft,
    Complaints,
    Acceptance,
}

impl DomainColumn {
    /// Every column, in display order.
    pub const ALL: [DomainColumn; 8] = [
        DomainColumn::Domain,
        DomainColumn::Recipients,
        DomainColumn::Accepted,
        DomainColumn::Deferred,
        DomainColumn::Hard,
        DomainColumn::Soft,
        DomainColumn::Complaints,
        DomainColumn::Acceptance,
    ];

    /// The column header.
    pub fn header(self) -> &'static str {
        match self {
            DomainColumn::Domain => "Domain",
            DomainColumn::Recipients => "Rcpts",
            DomainColumn::Accepted => "Accept",
            DomainColumn::Deferred => "Defer",
            DomainColumn::Hard => "Hard",
            DomainColumn::Soft => "Soft",
            DomainColumn::Complaints => "Compl",
            DomainColumn::Acceptance => "Acc%",
        }
    }

    fn index(self) -> usize {
        DomainColumn::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or(0)
    }

    fn step(self, forward: bool) -> DomainColumn {
        let n = DomainColumn::ALL.len();
        let i = if forward {
            (self.index() + 1) % n
        } else {
            (self.index() + n - 1) % n
        };
        DomainColumn::ALL[i]
    }
}

/// An open drill-down: what it is about and how far it is scrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drill {
    pub focus: Focus,
    pub scroll: u16,
}

/// The whole dashboard state.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub ledger: PathBuf,
    /// Further ledgers of the same campaigns (shards), merged with the first (`report::merge`).
    pub more_ledgers: Vec<PathBuf>,
    pub thresholds: Thresholds,
    pub status: Status,
    /// The campaign shown; `None` until the first snapshot picks the newest one.
    pub campaign: Option<String>,
    pub pane: Pane,
    /// Selected row per pane (index into the filtered, sorted rows), by `Pane::index`.
    pub selected: [usize; 5],
    pub sort: DomainColumn,
    /// Largest first when true.
    pub descending: bool,
    /// Case-insensitive substring that the domain, reason and event lists must contain.
    pub filter: String,
    /// True while `/` input is being typed.
    pub editing_filter: bool,
    pub drill: Option<Drill>,
    pub help: bool,
}

impl App {
    /// A dashboard over `ledger`, showing `campaign` (or the newest one).
    pub fn new(ledger: PathBuf, campaign: Option<String>, thresholds: Thresholds) -> App {
        App {
            ledger,
            more_ledgers: Vec::new(),
            thresholds,
            status: Status::Loading,
            campaign,
            pane: Pane::Domains,
            selected: [0; 5],
            sort: DomainColumn::Recipients,
            descending: true,
            filter: String::new(),
            editing_filter: false,
            drill: None,
            help: false,
        }
    }

    /// The snapshot, when one has been read.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        match &self.status {
            Status::Ready(snapshot) => Some(snapshot),
            _ => None,
        }
    }

    /// The shown campaign's numbers.
    pub fn report(&self) -> Option<&CampaignReport> {
        self.snapshot().and_then(|s| s.report.as_ref())
    }

    /// What the next fetch must read: the campaign and the drill-down focus.
    pub fn request(&self) -> (Option<String>, Option<Focus>) {
        (
            self.campaign.clone(),
            self.drill.as_ref().map(|d| d.focus.clone()),
        )
    }

    /// Takes a fetched snapshot (or the reason there is none).
    pub fn apply(&mut self, status: Status) {
        // No campaign chosen yet, or one the ledger does not have: show (and name) the one the
        // snapshot fell back to, so the title never disagrees with the numbers.
        if let Status::Ready(snapshot) = &status
            && !snapshot
                .campaigns
                .iter()
                .any(|c| Some(&c.name) == self.campaign.as_ref())
            && let Some(report) = &snapshot.report
        {
            self.campaign = Some(report.campaign.name.clone());
        }
        self.status = status;
        self.clamp();
    }

    fn matches(&self, haystack: &str) -> bool {
        self.filter.is_empty()
            || haystack
                .to_lowercase()
                .contains(&self.filter.to_lowercase())
    }

    /// Domain rows after the filter, in the chosen order.
    pub fn domains(&self) -> Vec<&DomainRow> {
        let Some(report) = self.report() else {
            return Vec::new();
        };
        let mut rows: Vec<&DomainRow> = report
            .domains
            .iter()
            .filter(|d| self.matches(&d.domain))
            .collect();
        let key = |d: &DomainRow| -> u64 {
            let t = &d.totals;
            match self.sort {
                DomainColumn::Domain => 0,
                DomainColumn::Recipients => t.recipients,
                DomainColumn::Accepted => t.relay_accepted,
                DomainColumn::Deferred => t.deferred,
                DomainColumn::Hard => t.bounced_hard,
                DomainColumn::Soft => t.bounced_soft,
                DomainColumn::Complaints => t.complained,
                // Basis points keep the order exact enough without float comparisons.
                DomainColumn::Acceptance => d.acceptance.map_or(0, |a| (a * 1_000_000.0) as u64),
            }
        };
        rows.sort_by(|a, b| {
            let order = if self.sort == DomainColumn::Domain {
                a.domain.cmp(&b.domain)
            } else {
                key(a).cmp(&key(b))
            };
            let order = if self.descending == (self.sort != DomainColumn::Domain) {
                order.reverse()
            } else {
                order
            };
            order.then_with(|| a.domain.cmp(&b.domain))
        });
        rows
    }

    /// Provider rows after the filter (by name), largest first.
    pub fn providers(&self) -> Vec<&ProviderRow> {
        self.report().map_or_else(Vec::new, |r| {
            r.providers
                .iter()
                .filter(|p| self.matches(&format!("{} {}", p.label, p.provider)))
                .collect()
        })
    }

    /// Diagnoses after the filter: the reasons pane lists them first.
    pub fn diagnoses(&self) -> Vec<&DiagnosisRow> {
        self.report().map_or_else(Vec::new, |r| {
            r.diagnoses
                .iter()
                .filter(|d| {
                    self.matches(&format!(
                        "{} {} {}",
                        d.title,
                        d.key,
                        d.example.as_deref().unwrap_or("")
                    ))
                })
                .collect()
        })
    }

    /// Reason rows after the filter.
    pub fn reasons(&self) -> Vec<&ReasonRow> {
        self.report().map_or_else(Vec::new, |r| {
            r.reasons
                .iter()
                .filter(|x| {
                    self.matches(&format!(
                        "{} {} {}",
                        x.status,
                        x.outcome,
                        x.example.as_deref().unwrap_or("")
                    ))
                })
                .collect()
        })
    }

    /// Recent events after the filter.
    pub fn events(&self) -> Vec<&HistoryEntry> {
        self.report().map_or_else(Vec::new, |r| {
            r.recent
                .iter()
                .filter(|e| {
                    self.matches(&format!(
                        "{} {} {} {}",
                        e.email,
                        e.outcome,
                        e.status.as_deref().unwrap_or(""),
                        e.text
                    ))
                })
                .collect()
        })
    }

    fn campaigns(&self) -> &[CampaignSummary] {
        self.snapshot().map_or(&[], |s| s.campaigns.as_slice())
    }

    fn len(&self, pane: Pane) -> usize {
        match pane {
            Pane::Campaigns => self.campaigns().len(),
            Pane::Domains => self.domains().len(),
            Pane::Reasons => self.diagnoses().len() + self.reasons().len(),
            Pane::Events => self.events().len(),
            Pane::Providers => self.providers().len(),
        }
    }

    /// The selected row of a pane, kept within its current length.
    pub fn selection(&self, pane: Pane) -> usize {
        let len = self.len(pane);
        if pane == Pane::Campaigns {
            return self
                .campaign
                .as_ref()
                .and_then(|name| self.campaigns().iter().position(|c| &c.name == name))
                .unwrap_or(0);
        }
        self.selected[pane.index()].min(len.saturating_sub(1))
    }

    fn clamp(&mut self) {
        for pane in Pane::ORDER {
            self.selected[pane.index()] = self.selection(pane);
        }
    }

    fn move_selection(&mut self, delta: isize) -> Option<Action> {
        if let Some(drill) = &mut self.drill {
            drill.scroll = drill
                .scroll
                .saturating_add_signed(delta.clamp(-1000, 1000) as i16);
            return None;
        }
        let len = self.len(self.pane);
        if len == 0 {
            return None;
        }
        let current = self.selection(self.pane) as isize;
        let next = (current + delta).clamp(0, len as isize - 1) as usize;
        if self.pane == Pane::Campaigns {
            let name = self.campaigns().get(next).map(|c| c.name.clone());
            if name != self.campaign {
                self.campaign = name;
                self.selected = [next, 0, 0, 0, 0];
                return Some(Action::Reload);
            }
            return None;
        }
        self.selected[self.pane.index()] = next;
        None
    }

    fn enter(&mut self) -> Option<Action> {
        let focus = match self.pane {
            Pane::Campaigns => return None,
            Pane::Domains => self
                .domains()
                .get(self.selection(Pane::Domains))
                .map(|d| Focus::Domain(d.domain.clone())),
            Pane::Reasons => {
                let at = self.selection(Pane::Reasons);
                let diagnoses = self.diagnoses();
                match diagnoses.get(at) {
                    Some(d) => Some(Focus::Diagnosis(d.key.clone())),
                    None => self
                        .reasons()
                        .get(at - diagnoses.len())
                        .map(|r| Focus::Reason {
                            source: r.source,
                            status: r.status.clone(),
                        }),
                }
            }
            Pane::Providers => self
                .providers()
                .get(self.selection(Pane::Providers))
                .map(|p| Focus::Provider(p.provider)),
            Pane::Events => self
                .events()
                .get(self.selection(Pane::Events))
                .map(|e| Focus::Recipient(e.email.clone())),
        }?;
        self.open(focus)
    }

    fn open(&mut self, focus: Focus) -> Option<Action> {
        self.drill = Some(Drill { focus, scroll: 0 });
        Some(Action::Reload)
    }

    /// Applies one key. Pure: the returned action tells the loop what to do.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d')) {
            return Some(Action::Quit);
        }
        if self.editing_filter {
            return self.filter_key(key);
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            return (key.code == KeyCode::Char('q')).then_some(Action::Quit);
        }
        match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            KeyCode::Char('?') => {
                self.help = true;
                None
            }
            KeyCode::Esc => {
                if self.drill.take().is_none() {
                    self.filter.clear();
                }
                self.clamp();
                None
            }
            KeyCode::Tab => {
                self.pane = Pane::ORDER[(self.pane.index() + 1) % Pane::ORDER.len()];
                None
            }
            KeyCode::BackTab => {
                let n = Pane::ORDER.len();
                self.pane = Pane::ORDER[(self.pane.index() + n - 1) % n];
                None
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(-1_000_000),
            KeyCode::End | KeyCode::Char('G') => self.move_selection(1_000_000),
            KeyCode::Right | KeyCode::Char('l') | KeyCode::Char('s')
                if self.pane == Pane::Domains && self.drill.is_none() =>
            {
                self.sort = self.sort.step(true);
                None
            }
            KeyCode::Left | KeyCode::Char('h') | KeyCode::Char('S')
                if self.pane == Pane::Domains && self.drill.is_none() =>
            {
                self.sort = self.sort.step(false);
                None
            }
            KeyCode::Char('r') if self.pane == Pane::Domains && self.drill.is_none() => {
                self.descending = !self.descending;
                None
            }
            KeyCode::Enter if self.drill.is_none() => self.enter(),
            KeyCode::Char('/') => {
                self.editing_filter = true;
                None
            }
            _ => None,
        }
    }

    fn filter_key(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Esc => {
                self.editing_filter = false;
                self.filter.clear();
            }
            KeyCode::Enter => {
                self.editing_filter = false;
                // An address goes straight to that recipient's history.
                if self.filter.contains('@') {
                    let email = self.filter.trim().to_owned();
                    self.filter.clear();
                    self.clamp();
                    return self.open(Focus::Recipient(email));
                }
            }
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char(c) => self.filter.push(c),
            _ => {}
        }
        self.selected[1..].fill(0);
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::report::{Rates, Source, Totals};

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn domain(name: &str, recipients: u64, hard: u64) -> DomainRow {
        DomainRow {
            domain: name.to_owned(),
            provider: crate::provider::Provider::Unknown,
            totals: Totals {
                recipients,
                accepted: recipients - hard,
                relay_accepted: recipients - hard,
                bounced_hard: hard,
                ..Totals::default()
            },
            acceptance: Some((recipients - hard) as f64 / recipients as f64),
        }
    }

    fn summary(name: &str) -> CampaignSummary {
        CampaignSummary {
            id: crate::model::CampaignId(1),
            name: name.to_owned(),
            created_at: 0,
            started_at: None,
            last_run_at: None,
            open_runs: 0,
            recipients: 0,
            finished: 0,
            relay_accepted: 0,
            attempted: 0,
            delivered: 0,
            bounced_hard: 0,
            complained: 0,
        }
    }

    fn app() -> App {
        let report = CampaignReport {
            campaign: summary("news"),
            totals: Totals::default(),
            rates: Rates::default(),
            funnel: crate::report::Funnel::default(),
            providers: vec![],
            diagnoses: vec![],
            domains: vec![
                domain("big.example", 100, 1),
                domain("bad.example", 10, 5),
                domain("mid.example", 50, 0),
            ],
            reasons: vec![ReasonRow {
                source: Source::Attempt,
                status: "5.1.1".into(),
                outcome: "bounced_hard".into(),
                count: 6,
                example: Some("550 5.1.1 no such user".into()),
            }],
            series: vec![],
            recent: vec![HistoryEntry {
                at: 1,
                email: "ann@bad.example".into(),
                kind: crate::report::EntryKind::Attempt {
                    step: "rcpt".into(),
                    port: Some(587),
                },
                code: Some(550),
                status: Some("5.1.1".into()),
                text: "550 5.1.1 no such user".into(),
                outcome: "bounced_hard".into(),
            }],
            test_sends: Vec::new(),
            test_send_count: 0,
            allowance: None,
            relays: vec![],
        };
        let mut app = App::new("l.db".into(), None, Thresholds::default());
        app.apply(Status::Ready(Box::new(Snapshot {
            taken_at: 0,
            campaigns: vec![summary("news"), summary("older")],
            report: Some(report),
            drill: None,
        })));
        app
    }

    fn names(app: &App) -> Vec<&str> {
        app.domains().iter().map(|d| d.domain.as_str()).collect()
    }

    #[test]
    fn first_snapshot_picks_the_campaign_and_q_quits() {
        let mut app = app();
        assert_eq!(app.campaign.as_deref(), Some("news"));
        assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Some(Action::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        app.editing_filter = true;
        assert_eq!(app.handle_key(ctrl_c), Some(Action::Quit));
    }

    #[test]
    fn domain_table_sorts_by_column_and_reverses() {
        let mut app = app();
        assert_eq!(names(&app), ["big.example", "mid.example", "bad.example"]);
        app.handle_key(key(KeyCode::Char('l'))); // accepted
        app.handle_key(key(KeyCode::Char('l'))); // deferred
        app.handle_key(key(KeyCode::Char('l'))); // hard
        assert_eq!(app.sort, DomainColumn::Hard);
        assert_eq!(names(&app), ["bad.example", "big.example", "mid.example"]);
        app.handle_key(key(KeyCode::Char('r')));
        assert_eq!(names(&app), ["mid.example", "big.example", "bad.example"]);
        for _ in 0..4 {
            app.handle_key(key(KeyCode::Left));
        }
        assert_eq!(app.sort, DomainColumn::Domain);
        assert_eq!(
            names(&app),
            ["mid.example", "big.example", "bad.example"],
            "z to a"
        );
        app.handle_key(key(KeyCode::Char('r')));
        assert_eq!(
            names(&app),
            ["bad.example", "big.example", "mid.example"],
            "a to z"
        );
        app.handle_key(key(KeyCode::Left));
        assert_eq!(app.sort, DomainColumn::Acceptance, "left wraps around");
    }

    #[test]
    fn enter_drills_into_the_selected_domain_and_esc_returns() {
        let mut app = app();
        app.handle_key(key(KeyCode::Char('j')));
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Down)); // stays on the last row
        assert_eq!(app.selection(Pane::Domains), 2);
        assert_eq!(app.handle_key(key(KeyCode::Enter)), Some(Action::Reload));
        assert_eq!(app.request().1, Some(Focus::Domain("bad.example".into())));
        app.handle_key(key(KeyCode::Char('j')));
        assert_eq!(
            app.drill.as_ref().unwrap().scroll,
            1,
            "j scrolls the drill-down"
        );
        app.handle_key(key(KeyCode::Esc));
        assert_eq!(app.request().1, None);
    }

    #[test]
    fn tab_cycles_panes_and_enter_opens_reason_and_recipient() {
        let mut app = app();
        app.handle_key(key(KeyCode::Tab));
        assert_eq!(app.pane, Pane::Reasons);
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(
            app.request().1,
            Some(Focus::Reason {
                source: Source::Attempt,
                status: "5.1.1".into()
            })
        );
        app.handle_key(key(KeyCode::Esc));
        app.handle_key(key(KeyCode::Tab));
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(
            app.request().1,
            Some(Focus::Recipient("ann@bad.example".into()))
        );
        app.handle_key(key(KeyCode::Esc));
        app.handle_key(key(KeyCode::BackTab));
        app.handle_key(key(KeyCode::BackTab));
        app.handle_key(key(KeyCode::BackTab));
        assert_eq!(app.pane, Pane::Campaigns);
    }

    #[test]
    fn an_unknown_campaign_name_gives_way_to_the_one_shown() {
        let mut app = app();
        app.campaign = Some("not-in-ledger".into());
        let status = app.status.clone();
        app.apply(status);
        assert_eq!(app.campaign.as_deref(), Some("news"));
    }

    #[test]
    fn moving_in_the_campaign_list_switches_campaign() {
        let mut app = app();
        app.pane = Pane::Campaigns;
        assert_eq!(app.handle_key(key(KeyCode::Down)), Some(Action::Reload));
        assert_eq!(app.request().0.as_deref(), Some("older"));
        assert_eq!(app.handle_key(key(KeyCode::Down)), None, "already last");
    }

    #[test]
    fn slash_filters_and_an_address_opens_the_recipient() {
        let mut app = app();
        app.handle_key(key(KeyCode::Char('/')));
        for c in "MID".chars() {
            app.handle_key(key(KeyCode::Char(c)));
        }
        assert_eq!(app.handle_key(key(KeyCode::Char('q'))), None, "q is typed");
        app.handle_key(key(KeyCode::Backspace));
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(names(&app), ["mid.example"]);
        app.handle_key(key(KeyCode::Esc));
        assert_eq!(names(&app).len(), 3, "esc clears the filter");
        app.handle_key(key(KeyCode::Char('/')));
        for c in "x@bad.example".chars() {
            app.handle_key(key(KeyCode::Char(c)));
        }
        assert_eq!(app.handle_key(key(KeyCode::Enter)), Some(Action::Reload));
        assert_eq!(
            app.request().1,
            Some(Focus::Recipient("x@bad.example".into()))
        );
    }

    #[test]
    fn providers_close_the_tab_cycle_and_diagnoses_lead_the_reasons() {
        use crate::provider::Provider;
        let mut app = app();
        let Status::Ready(snapshot) = &mut app.status else {
            panic!("no snapshot");
        };
        let report = snapshot.report.as_mut().unwrap();
        report.providers = crate::report::ProviderRow::sum_of(&report.domains);
        report.diagnoses = vec![DiagnosisRow {
            key: "gmail-4.7.0".into(),
            provider: Some(Provider::Google),
            title: "Gmail: try again later".into(),
            meaning: String::new(),
            fix: String::new(),
            source: String::new(),
            count: 2,
            example: None,
        }];
        // Shift-Tab from the domains wraps past the campaigns to the providers.
        app.handle_key(key(KeyCode::BackTab));
        app.handle_key(key(KeyCode::BackTab));
        assert_eq!(app.pane, Pane::Providers);
        assert_eq!(app.handle_key(key(KeyCode::Enter)), Some(Action::Reload));
        assert_eq!(app.request().1, Some(Focus::Provider(Provider::Unknown)));
        app.handle_key(key(KeyCode::Esc));
        app.handle_key(key(KeyCode::Tab));
        assert_eq!(app.pane, Pane::Campaigns, "and Tab wraps back");
        // The reasons pane: the diagnosis first, then the status codes.
        app.pane = Pane::Reasons;
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(
            app.request().1,
            Some(Focus::Diagnosis("gmail-4.7.0".into()))
        );
        app.handle_key(key(KeyCode::Esc));
        app.handle_key(key(KeyCode::Down));
        app.handle_key(key(KeyCode::Enter));
        assert_eq!(
            app.request().1,
            Some(Focus::Reason {
                source: Source::Attempt,
                status: "5.1.1".into()
            })
        );
    }

    #[test]
    fn help_opens_with_question_mark_and_any_key_closes_it() {
        let mut app = app();
        app.handle_key(key(KeyCode::Char('?')));
        assert!(app.help);
        assert_eq!(app.handle_key(key(KeyCode::Char('j'))), None);
        assert!(!app.help);
        assert_eq!(
            app.selection(Pane::Domains),
            0,
            "the closing key does nothing else"
        );
    }
}
