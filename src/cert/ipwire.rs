//! How certificates carry an [`Ipv4Net`] in `Ips`/`Subnets`: a (big-endian address, mask) pair of
//! u32s. Only the wire pair lives here; the network type itself is `crate::net`.

use std::net::Ipv4Addr;

use super::error::CertError;
use crate::net::Ipv4Net;

impl Ipv4Net {
    /// Decodes a certificate (address, mask) pair; the mask must be a contiguous prefix.
    pub fn from_wire(addr: u32, mask: u32) -> Result<Self, CertError> {
        Ipv4Net::from_mask(Ipv4Addr::from(addr), mask).ok_or(CertError::NonContiguousMask {
            addr: Ipv4Addr::from(addr),
            mask,
        })
    }

    /// The (address, mask) pair as stored in a certificate.
    pub fn to_wire(self) -> (u32, u32) {
        (u32::from(self.addr()), self.mask())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_masks() {
        let n = Ipv4Net::from_wire(0x0A2A0105, 0xFFFF0000).unwrap();
        assert_eq!(n.to_string(), "10.42.1.5/16");
        assert_eq!(n.to_wire(), (0x0A2A0105, 0xFFFF0000));
        assert_eq!(n.network().to_string(), "10.42.0.0/16");
        assert_eq!(Ipv4Net::from_wire(1, 0).unwrap().prefix(), 0);
        assert_eq!(Ipv4Net::from_wire(1, u32::MAX).unwrap().prefix(), 32);
        assert!(Ipv4Net::from_wire(1, 0xFF00FF00).is_err());
        assert!(Ipv4Net::from_wire(1, 0x00FFFFFF).is_err());
    }
}
