//! (module `sandbox`: not written yet)
