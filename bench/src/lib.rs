//! The parts of Canopy's benchmark suite that other load tools share: the
//! TSBS devops cpu-only vocabulary and data generator.

pub mod tsbs;
