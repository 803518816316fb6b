"""The built-in health checks, one file per check or family of checks; the registry imports every
module of this package (a module's own checks are in its folder: migrations/<module>/health/)."""
