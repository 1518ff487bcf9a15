//! engine/local (to be written)
