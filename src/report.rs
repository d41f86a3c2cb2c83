//! (module `report`: not written yet)
