//! (module `bounce`: not written yet)
