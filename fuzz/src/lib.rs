//! The fuzz targets' drivers, in one file that the regression test includes too.
pub mod drivers;
