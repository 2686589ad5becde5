//! Task ids: 32 lowercase hex characters with no prefix, as the live service sends
//! them, that carry everything needed to answer for the task later: its creation
//! time, its outcome, how long it generates, how long its 1080p file takes, and its
//! aspect ratio, resolution and model. The fields are sealed under keys drawn from
//! the simulator's seed (a keyed permutation of the 128 bits, with a keyed check),
//! so the ids look opaque, and a later simulator with the same seed (the next
//! `run --simulate` of a resumed run, or `simulate` restarted) re-derives a task it
//! did not create from its id alone, while any other string stays unknown.
//!
//! Ids never repeat across simulator instances: each instance starts its counter at
//! a nonce drawn from the OS's entropy, and the creation time (in milliseconds) is
//! part of the id. No other draw depends on the nonce, so everything else a seeded
//! simulator does stays reproducible.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds from the Unix epoch to 2020-01-01: ids count from there, so 41 bits
/// last until 2089.
const EPOCH_MS: u64 = 1_577_836_800_000;

const CREATED_BITS: u32 = 41;
const UNIQ_BITS: u32 = 24;
const OUTCOME_BITS: u32 = 3;
const ASPECT_BITS: u32 = 2;
const RESOLUTION_BITS: u32 = 2;
const MODEL_BITS: u32 = 2;
const SPAN_BITS: u32 = 16;
const CHECK_BITS: u32 = 22;
const _: () = assert!(
    CREATED_BITS
        + UNIQ_BITS
        + OUTCOME_BITS
        + ASPECT_BITS
        + RESOLUTION_BITS
        + MODEL_BITS
        + 2 * SPAN_BITS
        + CHECK_BITS
        == 128
);

/// Steps per doubling of a duration in a 16-bit span: 2048 gives 0.034% steps up to
/// 2^32 ms (49 days).
const SPAN_STEPS: f64 = 2048.0;

const fn mask(bits: u32) -> u128 {
    (1u128 << bits) - 1
}

/// What an id carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sealed {
    /// Milliseconds since 2020-01-01 UTC.
    pub created_ms: u64,
    /// The instance's nonce plus its counter: tells apart tasks of the same millisecond.
    pub uniq: u32,
    /// 0 for success, else 1 + the index of the failure kind.
    pub outcome: u8,
    pub aspect: u8,
    pub resolution: u8,
    pub model: u8,
    /// The generation time, as [`encode_span`] writes it.
    pub generation: u16,
    /// The time from success to the 1080p file, as [`encode_span`] writes it.
    pub hd: u16,
}

impl Sealed {
    pub fn created_wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(EPOCH_MS.saturating_add(self.created_ms))
    }

    /// A creation time as an id holds it (to the millisecond, clamped to its range).
    pub fn created_ms_of(t: SystemTime) -> u64 {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ms.saturating_sub(EPOCH_MS).min(mask(CREATED_BITS) as u64)
    }

    fn pack(&self) -> u128 {
        let mut v = u128::from(self.created_ms) & mask(CREATED_BITS);
        for (value, bits) in [
            (u128::from(self.uniq), UNIQ_BITS),
            (u128::from(self.outcome), OUTCOME_BITS),
            (u128::from(self.aspect), ASPECT_BITS),
            (u128::from(self.resolution), RESOLUTION_BITS),
            (u128::from(self.model), MODEL_BITS),
            (u128::from(self.generation), SPAN_BITS),
            (u128::from(self.hd), SPAN_BITS),
        ] {
            v = (v << bits) | (value & mask(bits));
        }
        v
    }

    fn unpack(v: u128) -> Sealed {
        let mut v = v;
        let mut take = |bits: u32| {
            let field = v & mask(bits);
            v >>= bits;
            field
        };
        // Fields come off in the reverse of the order `pack` put them on; every
        // cast below is of a field masked to fewer bits than its type holds.
        let hd = take(SPAN_BITS) as u16;
        let generation = take(SPAN_BITS) as u16;
        let model = take(MODEL_BITS) as u8;
        let resolution = take(RESOLUTION_BITS) as u8;
        let aspect = take(ASPECT_BITS) as u8;
        let outcome = take(OUTCOME_BITS) as u8;
        let uniq = take(UNIQ_BITS) as u32;
        let created_ms = take(CREATED_BITS) as u64;
        Sealed {
            created_ms,
            uniq,
            outcome,
            aspect,
            resolution,
            model,
            generation,
            hd,
        }
    }
}

/// A duration as 16 bits on a log scale, rounded to the nearest step.
pub(crate) fn encode_span(d: Duration) -> u16 {
    let ms = d.as_secs_f64() * 1000.0;
    let steps = (ms + 1.0).log2() * SPAN_STEPS;
    if steps.is_finite() && steps > 0.0 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "rounded and clamped to u16's range"
        )]
        let code = steps.round().min(f64::from(u16::MAX)) as u16;
        code
    } else {
        0
    }
}

/// The duration a 16-bit span stands for.
pub(crate) fn decode_span(code: u16) -> Duration {
    let ms = (f64::from(code) / SPAN_STEPS).exp2() - 1.0;
    Duration::from_secs_f64((ms / 1000.0).max(0.0))
}

/// splitmix64's finaliser: a fixed, well-mixed function of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const ROUNDS: usize = 6;

/// Seals and opens ids under keys drawn from one seed.
#[derive(Debug, Clone)]
pub(crate) struct Codec {
    keys: [u64; ROUNDS],
    check_key: u64,
}

impl Codec {
    pub fn new(seed: u64) -> Codec {
        let mut state = mix(seed ^ 0x7665_6F2D_6964_7321);
        let mut next = || {
            state = mix(state);
            state
        };
        let keys = std::array::from_fn(|_| next());
        Codec {
            keys,
            check_key: next(),
        }
    }

    fn check(&self, packed: u128) -> u128 {
        #[expect(clippy::cast_possible_truncation, reason = "halves of 128 bits")]
        let (hi, lo) = ((packed >> 64) as u64, packed as u64);
        u128::from(mix(mix(hi ^ self.check_key) ^ lo)) & mask(CHECK_BITS)
    }

    /// The id of a task: the fields and their check, through a keyed Feistel
    /// permutation of 128 bits (so distinct fields give distinct ids).
    pub fn seal(&self, fields: &Sealed) -> u128 {
        let packed = fields.pack();
        let block = (packed << CHECK_BITS) | self.check(packed);
        #[expect(clippy::cast_possible_truncation, reason = "halves of 128 bits")]
        let (mut l, mut r) = ((block >> 64) as u64, block as u64);
        for key in self.keys {
            (l, r) = (r, l ^ mix(r ^ key));
        }
        (u128::from(l) << 64) | u128::from(r)
    }

    /// The fields of an id this codec sealed; `None` for any other value (its check
    /// does not match, but for one value in four million).
    pub fn open(&self, id: u128) -> Option<Sealed> {
        #[expect(clippy::cast_possible_truncation, reason = "halves of 128 bits")]
        let (mut l, mut r) = ((id >> 64) as u64, id as u64);
        for key in self.keys.iter().rev() {
            (l, r) = (r ^ mix(l ^ key), l);
        }
        let block = (u128::from(l) << 64) | u128::from(r);
        let packed = block >> CHECK_BITS;
        (self.check(packed) == block & mask(CHECK_BITS)).then(|| Sealed::unpack(packed))
    }
}

/// An id as the service writes it.
pub(crate) fn format(id: u128) -> String {
    format!("{id:032x}")
}

/// The value of an id in the service's form (32 lowercase hex characters).
pub(crate) fn parse(id: &str) -> Option<u128> {
    if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(id, 16).ok()
}

/// A value no other simulator instance is likely to start from: the OS's entropy
/// (through std's randomly keyed hasher), the time and the process id.
pub(crate) fn instance_nonce() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    #[expect(clippy::cast_possible_truncation, reason = "a nonce of UNIQ_BITS")]
    let nonce = (mix(h.finish()) as u128 & mask(UNIQ_BITS)) as u32;
    nonce
}

/// The `uniq` field after `counter` tasks of an instance that started at `nonce`.
pub(crate) fn uniq(nonce: u32, counter: u64) -> u32 {
    #[expect(clippy::cast_possible_truncation, reason = "wraps within UNIQ_BITS")]
    let low = counter as u32;
    (nonce.wrapping_add(low) as u128 & mask(UNIQ_BITS)) as u32
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fields() -> impl Strategy<Value = Sealed> {
        (
            0..=mask(CREATED_BITS) as u64,
            0..=mask(UNIQ_BITS) as u32,
            0..8u8,
            0..4u8,
            0..4u8,
            0..4u8,
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(
                |(created_ms, uniq, outcome, aspect, resolution, model, generation, hd)| Sealed {
                    created_ms,
                    uniq,
                    outcome,
                    aspect,
                    resolution,
                    model,
                    generation,
                    hd,
                },
            )
    }

    proptest! {
        #[test]
        fn an_id_opens_to_what_was_sealed(f in fields(), seed in any::<u64>()) {
            let codec = Codec::new(seed);
            let id = codec.seal(&f);
            prop_assert_eq!(parse(&format(id)), Some(id));
            prop_assert_eq!(codec.open(id), Some(f));
        }

        #[test]
        fn spans_round_trip_within_a_step(ms in 0u64..4_000_000_000) {
            let d = Duration::from_millis(ms);
            let back = decode_span(encode_span(d));
            let err = back.as_secs_f64() * 1000.0 - ms as f64;
            // Half a step of 2^(1/2048), relative to ms + 1.
            prop_assert!(err.abs() <= (ms as f64 + 1.0) * 0.000_2, "{ms} ms -> {back:?}");
            prop_assert_eq!(encode_span(back), encode_span(d), "decoding is stable");
        }
    }

    #[test]
    fn ids_look_like_the_live_service_and_only_the_same_seed_opens_them() {
        let f = Sealed {
            created_ms: 123_456_789,
            uniq: 7,
            outcome: 0,
            aspect: 1,
            resolution: 1,
            model: 1,
            generation: encode_span(Duration::from_secs(90)),
            hd: encode_span(Duration::from_secs(120)),
        };
        let id = format(Codec::new(1).seal(&f));
        assert_eq!(id.len(), 32);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let value = parse(&id).expect("an id parses");
        assert_eq!(Codec::new(1).open(value), Some(f));
        assert_eq!(Codec::new(2).open(value), None, "another seed");
        // A neighbouring task looks nothing like it.
        let next = format(Codec::new(1).seal(&Sealed { uniq: 8, ..f }));
        let same = id.bytes().zip(next.bytes()).filter(|(a, b)| a == b).count();
        assert!(same < 12, "{id} vs {next}");
        // Strings that are not ids of this seed are unknown.
        let opened = (0..10_000u128)
            .filter(|v| {
                Codec::new(1)
                    .open(v.wrapping_mul(0x1234_5678_9abc_def1))
                    .is_some()
            })
            .count();
        assert_eq!(opened, 0);
        for bad in [
            "veo_task_0000",
            "",
            &id.to_uppercase(),
            &id[1..],
            &format!("{id}0"),
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn creation_times_keep_their_millisecond() {
        let t = UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        let f = Sealed {
            created_ms: Sealed::created_ms_of(t),
            uniq: 0,
            outcome: 0,
            aspect: 0,
            resolution: 0,
            model: 0,
            generation: 0,
            hd: 0,
        };
        assert_eq!(f.created_wall(), t);
        assert_eq!(Sealed::created_ms_of(UNIX_EPOCH), 0, "clamped");
    }

    #[test]
    fn nonces_differ_and_uniq_wraps_within_its_bits() {
        let a = instance_nonce();
        let b = instance_nonce();
        assert_ne!(a, b);
        assert!(a <= mask(UNIQ_BITS) as u32);
        assert_eq!(uniq(mask(UNIQ_BITS) as u32, 1), 0);
        assert_eq!(uniq(5, 3), 8);
    }
}
