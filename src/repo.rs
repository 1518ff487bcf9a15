//! repo (to be written)
