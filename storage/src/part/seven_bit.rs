//! Bytes as a string of 7-bit characters (U+0000–U+007F): how formats 6–7
//! kept their compressed footer in the Arrow file footer, whose metadata
//! values are strings. Base64 carries 6 bits a character (+33 %), this 7
//! (+14 %) — on a real Prometheus' footers ~3.6 KB less per part — and every
//! character is a one-byte UTF-8 code point, as flatbuffers strings require.

/// Encodes `bytes`, 7 bits a character, the last padded with zero bits
/// (format 8 writes no such footer: kept to test the decoder against).
#[cfg(test)]
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 7 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 7 {
            bits -= 7;
            out.push(char::from(((acc >> bits) & 0x7f) as u8));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(((acc << (7 - bits)) & 0x7f) as u8));
    }
    out
}

/// Decodes what [`encode`] made; `None` on a character past U+007F.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 7 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text.as_bytes() {
        if c > 0x7f {
            return None;
        }
        acc = (acc << 7) | c as u32;
        bits += 7;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_at_seven_bits_a_character() {
        let mut x = 1u64;
        for len in [0usize, 1, 6, 7, 8, 9, 63, 64, 1000] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), (len * 8).div_ceil(7), "{len} bytes");
            assert!(text.bytes().all(|c| c <= 0x7f));
            assert_eq!(decode(&text).as_deref(), Some(&bytes[..]), "{len} bytes");
        }
        assert_eq!(decode("a\u{e9}"), None, "a character past U+007F");
    }
}
