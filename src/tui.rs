//! (module `tui`: not written yet)
