//! schedule (to be written)
