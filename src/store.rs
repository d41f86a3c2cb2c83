//! (module `store`: not written yet)
