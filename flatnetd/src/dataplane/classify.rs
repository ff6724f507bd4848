//! Demultiplexing of datagrams arriving on the data plane's one UDP socket.
//!
//! The socket carries two protocols. WireGuard messages start with a
//! little-endian `u32` type of 1..=4 (so the first byte is 1..=4 and the next
//! three are zero) and have fixed sizes except for data. QUIC packets (the
//! Lighthouse) always have the "fixed bit" 0x40 set in their first byte, so
//! every QUIC packet's first byte is `>= 0x40`. Path MTU probes and their
//! acks ([`super::pmtu`]) start with 0x20 / 0x21 and three zero bytes. The
//! ranges never overlap; anything else is junk and dropped before any
//! cryptography runs.

/// The four WireGuard message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgKind {
    HandshakeInit,
    HandshakeResponse,
    CookieReply,
    Data,
}

/// What a datagram is, judged from its header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    WireGuard(WgKind),
    Quic,
    MtuProbe,
    MtuAck,
    Junk,
}

pub const HANDSHAKE_INIT_LEN: usize = 148;
pub const HANDSHAKE_RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Header (16) plus the AEAD tag (16): an empty keepalive.
pub const DATA_MIN_LEN: usize = 32;

/// Classify one datagram.
pub fn classify(d: &[u8]) -> Datagram {
    let Some(&first) = d.first() else {
        return Datagram::Junk;
    };
    if first >= 0x40 {
        return Datagram::Quic;
    }
    if d.len() < 4 || d[1..4] != [0, 0, 0] {
        return Datagram::Junk;
    }
    match first {
        super::pmtu::PROBE => return Datagram::MtuProbe,
        super::pmtu::ACK => return Datagram::MtuAck,
        _ => {}
    }
    let kind = match (first, d.len()) {
        (1, HANDSHAKE_INIT_LEN) => WgKind::HandshakeInit,
        (2, HANDSHAKE_RESPONSE_LEN) => WgKind::HandshakeResponse,
        (3, COOKIE_REPLY_LEN) => WgKind::CookieReply,
        // Senders should pad to 16 bytes but need not (boringtun does not).
        (4, n) if n >= DATA_MIN_LEN => WgKind::Data,
        _ => return Datagram::Junk,
    };
    Datagram::WireGuard(kind)
}

/// The receiver index of a response, cookie reply or data message: the
/// index *we* chose, which names the peer and session it belongs to.
pub fn receiver_index(kind: WgKind, d: &[u8]) -> Option<u32> {
    let at = match kind {
        WgKind::HandshakeInit => return None,
        WgKind::HandshakeResponse => 8,
        WgKind::CookieReply | WgKind::Data => 4,
    };
    let b: [u8; 4] = d.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        v[0] = kind;
        v
    }

    #[test]
    fn wireguard_messages_by_type_and_size() {
        use WgKind::*;
        assert_eq!(classify(&msg(1, 148)), Datagram::WireGuard(HandshakeInit));
        assert_eq!(
            classify(&msg(2, 92)),
            Datagram::WireGuard(HandshakeResponse)
        );
        assert_eq!(classify(&msg(3, 64)), Datagram::WireGuard(CookieReply));
        assert_eq!(classify(&msg(4, 32)), Datagram::WireGuard(Data));
        assert_eq!(classify(&msg(4, 32 + 1424)), Datagram::WireGuard(Data));
    }

    #[test]
    fn quic_headers_go_to_quic() {
        // Long header (Initial) and short header first bytes.
        for b in [0xc0u8, 0xc3, 0x40, 0x5f, 0xff] {
            let mut d = vec![0u8; 1200];
            d[0] = b;
            assert_eq!(classify(&d), Datagram::Quic, "{b:#x}");
        }
    }

    #[test]
    fn junk_is_junk() {
        assert_eq!(classify(&[]), Datagram::Junk);
        assert_eq!(classify(&[1]), Datagram::Junk);
        assert_eq!(classify(&msg(0, 148)), Datagram::Junk);
        assert_eq!(classify(&msg(5, 148)), Datagram::Junk);
        assert_eq!(classify(&msg(0x3f, 148)), Datagram::Junk);
        assert_eq!(classify(&msg(0x1f, 148)), Datagram::Junk);
        // Wrong sizes for fixed-size messages, unpadded data.
        assert_eq!(classify(&msg(1, 147)), Datagram::Junk);
        assert_eq!(classify(&msg(2, 148)), Datagram::Junk);
        assert_eq!(classify(&msg(4, 31)), Datagram::Junk);
        // Reserved bytes must be zero.
        let mut d = msg(1, 148);
        d[2] = 1;
        assert_eq!(classify(&d), Datagram::Junk);
    }

    #[test]
    fn mtu_probes_and_acks_by_first_word() {
        assert_eq!(classify(&msg(0x20, 1252)), Datagram::MtuProbe);
        assert_eq!(classify(&msg(0x21, 14)), Datagram::MtuAck);
        let mut d = msg(0x20, 1252);
        d[3] = 1;
        assert_eq!(classify(&d), Datagram::Junk);
    }

    #[test]
    fn receiver_index_positions() {
        let mut d = msg(4, 48);
        d[4..8].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        assert_eq!(receiver_index(WgKind::Data, &d), Some(0x0102_0304));
        let mut r = msg(2, 92);
        r[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(receiver_index(WgKind::HandshakeResponse, &r), Some(7));
        assert_eq!(receiver_index(WgKind::HandshakeInit, &msg(1, 148)), None);
        assert_eq!(receiver_index(WgKind::Data, &[4, 0, 0]), None);
    }
}
