//! Configuration: Nebula-style YAML into one typed model with defaults and warnings. Pure code.
