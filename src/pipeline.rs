//! (module `pipeline`: not written yet)
