//! Robustness: at least 1,000,000 random and mutated inputs go to every decoder and
//! validator. Nothing may panic. The inputs come from a seeded generator, so a failure
//! reproduces exactly; the figure printed is inputs per second.
//!
//! `cargo test --release -p agentnet-protocol --test it robustness -- --nocapture` prints
//! the release-mode rate quoted in the notes.

use std::time::Instant;

use agentnet_protocol::*;

use crate::fixtures::*;

/// How many inputs the test generates. Each input goes to every decoder.
const INPUTS: usize = 1_000_000;

#[test]
fn a_million_hostile_inputs_never_panic() {
    let ctx = ctx();
    let envelopes = envelopes();
    let payloads: Vec<Vec<u8>> = envelopes
        .iter()
        .map(|e| {
            SignedEnvelope::from_bytes(e)
                .expect("fixture")
                .payload()
                .to_vec()
        })
        .collect();
    let others = vec![
        IntentResponse::Result(SignedEnvelope::from_bytes(&envelopes[3]).expect("fixture"))
            .to_bytes(),
        IntentResponse::Rejected(Rejection {
            code: RejectionCode::Paused,
            message: "paused by org".into(),
        })
        .to_bytes(),
        sync_request().to_bytes(),
        SyncRequest::Fetch {
            table: SyncTable::Registry,
            keys: vec![b"did:key:z6Mk".to_vec(), b"did:key:z6Mm".to_vec()],
        }
        .to_bytes(),
        SyncResponse::Records(envelopes[..3].to_vec()).to_bytes(),
    ];
    let corpus: Vec<&[u8]> = envelopes
        .iter()
        .chain(&payloads)
        .chain(&others)
        .map(Vec::as_slice)
        .collect();
    let signers = [key(1), key(2), key(50)];

    let mut rng = Rng::new(0x5eed_a9e7);
    let mut stats = Stats::default();
    let mut input = Vec::with_capacity(4096);
    let started = Instant::now();
    for n in 0..INPUTS {
        input.clear();
        match rng.below(10) {
            // Pure noise of a random length.
            0 | 1 => {
                input.resize(rng.below(300), 0);
                rng.fill(&mut input);
            }
            // A valid payload, mutated, then signed properly by a plausible signer, so the
            // mutation reaches the payload decoders and validators through the signed path.
            2 => {
                let kind = Kind::ALL[rng.below(Kind::ALL.len())];
                input.extend_from_slice(corpus[envelopes.len() + kind as usize - 1]);
                mutate(&mut rng, &mut input, &corpus);
                let signer = &signers[rng.below(signers.len())];
                let signed = raw_signed(kind, &input, signer);
                input.clear();
                input.extend_from_slice(&signed);
            }
            // A valid message of any sort, mutated.
            _ => {
                input.extend_from_slice(corpus[rng.below(corpus.len())]);
                mutate(&mut rng, &mut input, &corpus);
            }
        }
        feed(&input, &ctx, &mut stats);
        if n % 100_000 == 0 {
            // Keep the generator's output honest: inputs must vary.
            assert!(
                n == 0 || stats.accepted_envelopes < n,
                "every input was accepted"
            );
        }
    }
    let elapsed = started.elapsed();
    let rate = INPUTS as f64 / elapsed.as_secs_f64();
    println!(
        "robustness: {INPUTS} inputs in {:.2} s = {rate:.0} inputs/s; \
         envelopes verified {}, messages opened {}, payloads decoded {}, other decodes ok {}",
        elapsed.as_secs_f64(),
        stats.accepted_envelopes,
        stats.opened,
        stats.payloads_ok,
        stats.others_ok
    );
    // The mutations must exercise both sides of the decoders, or the test proves little.
    assert!(stats.accepted_envelopes > 1000, "{stats:?}");
    assert!(stats.opened > 100, "{stats:?}");
    assert!(stats.payloads_ok > 1000, "{stats:?}");
    assert!(stats.others_ok > 1000, "{stats:?}");
}

#[derive(Debug, Default)]
struct Stats {
    accepted_envelopes: usize,
    opened: usize,
    payloads_ok: usize,
    others_ok: usize,
}

/// Runs every decoder and validator on `input`. Errors are expected; panics are bugs.
fn feed(input: &[u8], ctx: &ValidationContext, stats: &mut Stats) {
    if let Ok(env) = SignedEnvelope::from_bytes(input) {
        stats.accepted_envelopes += 1;
        let opened = match env.kind() {
            Kind::AgentCard => env.open::<AgentCard>(ctx).is_ok(),
            Kind::Tombstone => env.open::<Tombstone>(ctx).is_ok(),
            Kind::Intent => env.open::<Intent>(ctx).is_ok(),
            Kind::IntentResult => env.open::<IntentResult>(ctx).is_ok(),
            Kind::Receipt => env.open::<Receipt>(ctx).is_ok(),
            Kind::TrustAttestation => env.open::<TrustAttestation>(ctx).is_ok(),
            Kind::PauseNotice => env.open::<PauseNotice>(ctx).is_ok(),
            _ => false,
        };
        stats.opened += usize::from(opened);
        let _ = env.to_bytes();
        let _ = env.content_id();
    }
    stats.payloads_ok += usize::from(decode_all(input, ctx));
    stats.others_ok += usize::from(IntentResponse::from_bytes(input).is_ok());
    stats.others_ok += usize::from(SyncRequest::from_bytes(input).is_ok());
    stats.others_ok += usize::from(SyncResponse::from_bytes(input).is_ok());
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = text.parse::<Did>();
    }
}

/// Decodes `input` as every payload type and runs the time checks on what decodes.
fn decode_all(input: &[u8], ctx: &ValidationContext) -> bool {
    fn one<M: Message>(input: &[u8], ctx: &ValidationContext) -> bool {
        match M::decode(input) {
            Ok(m) => {
                let _ = m.check_time(ctx);
                let _ = Message::encode(&m);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    }
    let results = [
        one::<AgentCard>(input, ctx),
        one::<Tombstone>(input, ctx),
        one::<Intent>(input, ctx),
        one::<IntentResult>(input, ctx),
        one::<Receipt>(input, ctx),
        one::<TrustAttestation>(input, ctx),
        one::<PauseNotice>(input, ctx),
    ];
    results.iter().any(|ok| *ok)
}

/// Applies 1 to 4 random mutations: bit flips, byte overwrites, insertions, deletions,
/// truncation, duplication of a slice, splicing from another corpus entry, and varints
/// replaced by extreme values.
fn mutate(rng: &mut Rng, buf: &mut Vec<u8>, corpus: &[&[u8]]) {
    for _ in 0..1 + rng.below(4) {
        let len = buf.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                buf[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                buf[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let extra = rng.below(16) + 1;
                for _ in 0..extra {
                    buf.insert(i, rng.next_u64() as u8);
                }
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(len - i) + 1;
                buf.drain(i..i + n.min(16));
            }
            4 => buf.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below((len - i).min(64)) + 1;
                let slice = buf[i..i + n].to_vec();
                let at = rng.below(len + 1);
                buf.splice(at..at, slice);
            }
            6 => {
                let other = corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    let n = rng.below(other.len() - i) + 1;
                    let at = rng.below(len + 1);
                    buf.splice(at..at, other[i..i + n].iter().copied());
                }
            }
            _ if len > 0 => {
                // A huge or overlong varint where a length or number was.
                let i = rng.below(len);
                let huge: &[u8] = match rng.below(3) {
                    0 => &[0xff, 0xff, 0xff, 0xff, 0x0f],
                    1 => &[0xff; 10],
                    _ => &[
                        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                    ],
                };
                buf.splice(i..i, huge.iter().copied());
            }
            _ => {}
        }
    }
    if buf.len() > 2 * limits::MAX_ENVELOPE_LEN {
        buf.truncate(limits::MAX_ENVELOPE_LEN + 1);
    }
}

fn raw_signed(kind: Kind, payload: &[u8], signer: &Keypair) -> Vec<u8> {
    crate::envelope::raw_envelope(kind as u32, payload, signer)
}

fn sync_request() -> SyncRequest {
    SyncRequest::Reconcile {
        table: SyncTable::Registry,
        ranges: vec![
            SyncRange {
                lower: vec![],
                upper: b"did:key:z6Mm".to_vec(),
                summary: RangeSummary::Fingerprint {
                    hash: [9; SYNC_HASH_LEN],
                    count: 4,
                },
            },
            SyncRange {
                lower: b"did:key:z6Mm".to_vec(),
                upper: vec![],
                summary: RangeSummary::Items(vec![SyncItem {
                    key: b"did:key:z6Mn".to_vec(),
                    version: 3,
                    hash: [1; SYNC_HASH_LEN],
                }]),
            },
        ],
    }
}
