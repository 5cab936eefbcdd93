//! A hash map for the core's own numeric keys (`Sid`, `RoomId`, call keys,
//! the shell's `ConnId`). Those are counters, not attacker-chosen, so they
//! do not need SipHash's flood resistance, and the fan-out loop does one
//! lookup per recipient. Keys that come off the wire (peer ids, room names,
//! session ids) stay in std's default maps.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Multiplicative hashing (the Fx constant): one multiply per word.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(SEED);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
