//! Wire formats: the 16-byte header and the protobuf messages. Pure code, no allocation on the data path.
