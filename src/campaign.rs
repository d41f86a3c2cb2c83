//! (module `campaign`: not written yet)
