//! Certificates (Nebula v1): protobuf types, PEM, CA pool, verify and sign. Pure code.
