//! (module `transport`: not written yet)
