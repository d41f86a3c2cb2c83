//! (module `doctor`: not written yet)
