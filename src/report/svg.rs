//! SVG plots (filled in with the discovery report).
