//! (module `shutdown`: not written yet)
