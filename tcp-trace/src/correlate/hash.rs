//! A fast, non-cryptographic hasher for the correlator's tables.
//!
//! The keys are socket addresses (`u64`), ports and 4-tuples, taken from the kernel:
//! hash flooding is not a concern, SipHash's cost per lookup is. Each word is mixed
//! with a folded multiply (the 128-bit product's halves XORed), so that the low bits
//! the table indexes by depend on every bit of the key: kernel addresses share their
//! low bits (slab alignment), which a plain multiply (FxHash) would keep.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// `HashMap` with [`FoldHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FoldHasher>>;

pub(crate) fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(BuildHasherDefault::default())
}

#[derive(Clone, Copy, Default)]
pub(crate) struct FoldHasher {
    state: u64,
}

/// Odd constants from the digits of pi (as in many multiply-mix hashes).
const K1: u64 = 0x243f_6a88_85a3_08d3;
const K2: u64 = 0x1319_8a2e_0370_7344;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

impl FoldHasher {
    #[inline]
    fn mix(&mut self, v: u64) {
        self.state = fold_mul(self.state ^ v, K1);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.mix(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.mix(v as u64);
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.mix(v as u64);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.mix(v as u64);
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }
    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // A second round, so that keys differing only in a few high or low bits
        // spread over the low bits too.
        fold_mul(self.state ^ K2, K1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};
    use std::net::IpAddr;

    fn h<T: Hash + ?Sized>(v: &T) -> u64 {
        BuildHasherDefault::<FoldHasher>::default().hash_one(v)
    }

    #[test]
    fn aligned_addresses_spread_over_low_bits() {
        // 4096 slab-aligned socket addresses: the low 12 bits of the hashes (a table
        // of 4096 buckets) should take most of the values.
        let mut seen = std::collections::HashSet::new();
        for i in 0..4096u64 {
            seen.insert(h(&(0xffff_8880_0000_0000u64 + (i << 11))) & 0xfff);
        }
        assert!(seen.len() > 2400, "{} distinct", seen.len());
        let mut seen = std::collections::HashSet::new();
        for i in 0..4096u64 {
            seen.insert(h(&(0xffff_8880_1234_5000u64.wrapping_add((i + 1) << 32))) & 0xfff);
        }
        assert!(seen.len() > 2400, "{} distinct", seen.len());
    }

    #[test]
    fn tuples_differ() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for p in 0..2000u16 {
            seen.insert(h(&(a, 8080u16, a, 32768 + p)));
            seen.insert(h(&(a, 32768 + p, a, 8080u16)));
            seen.insert(h(&(b, 8080u16, b, 32768 + p)));
        }
        assert_eq!(seen.len(), 6000);
        assert_ne!(h(&b"a"[..]), h(&b"a\0"[..]));
    }
}
