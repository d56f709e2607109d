//! `specs/protocol.md` and `specs/identity.md` must state what the code does: every limit,
//! domain tag, protocol id and topic is checked against the spec text.

use agentnet_protocol::limits::*;
use agentnet_protocol::{Kind, ids};

const PROTOCOL: &str = include_str!("../../../specs/protocol.md");
const IDENTITY: &str = include_str!("../../../specs/identity.md");

fn row(name: &str, value: impl std::fmt::Display) -> String {
    format!("| `{name}` | {value} |")
}

fn ms(d: std::time::Duration) -> String {
    format!("{} ms", d.as_millis())
}

#[test]
fn every_limit_is_in_the_spec_with_its_value() {
    let rows = [
        row("MAX_CARD_LEN", MAX_CARD_LEN),
        row("MAX_TOMBSTONE_LEN", MAX_TOMBSTONE_LEN),
        row("MAX_INTENT_LEN", MAX_INTENT_LEN),
        row("MAX_INTENT_RESULT_LEN", MAX_INTENT_RESULT_LEN),
        row("MAX_RECEIPT_LEN", MAX_RECEIPT_LEN),
        row("MAX_ATTESTATION_LEN", MAX_ATTESTATION_LEN),
        row("MAX_PAUSE_NOTICE_LEN", MAX_PAUSE_NOTICE_LEN),
        row("MAX_ENVELOPE_OVERHEAD", MAX_ENVELOPE_OVERHEAD),
        row("MAX_ENVELOPE_LEN", MAX_ENVELOPE_LEN),
        row("MAX_NAME_LEN", MAX_NAME_LEN),
        row("MAX_DESCRIPTION_LEN", MAX_DESCRIPTION_LEN),
        row("MAX_CAPABILITIES", MAX_CAPABILITIES),
        row("MAX_CAPABILITY_NAME_LEN", MAX_CAPABILITY_NAME_LEN),
        row(
            "MAX_CAPABILITY_DESCRIPTION_LEN",
            MAX_CAPABILITY_DESCRIPTION_LEN,
        ),
        row("MAX_TAGS", MAX_TAGS),
        row("MAX_TAG_LEN", MAX_TAG_LEN),
        row("MAX_VERSION_LEN", MAX_VERSION_LEN),
        row("MAX_ENDPOINTS", MAX_ENDPOINTS),
        row("MAX_ENDPOINT_LEN", MAX_ENDPOINT_LEN),
        row("MAX_CREDENTIALS", MAX_CREDENTIALS),
        row("MAX_CREDENTIAL_FORMAT_LEN", MAX_CREDENTIAL_FORMAT_LEN),
        row("MAX_CREDENTIAL_LEN", MAX_CREDENTIAL_LEN),
        row("MAX_CURRENCY_LEN", MAX_CURRENCY_LEN),
        row("MAX_AMOUNT_MICROS", MAX_AMOUNT_MICROS),
        row("MAX_INTENT_INPUT_LEN", MAX_INTENT_INPUT_LEN),
        row("MAX_INTENT_OUTPUT_LEN", MAX_INTENT_OUTPUT_LEN),
        row("MAX_ERROR_LEN", MAX_ERROR_LEN),
        row("MAX_ATTESTATION_RECEIPTS", MAX_ATTESTATION_RECEIPTS),
        row("MAX_PAUSE_SUBJECTS", MAX_PAUSE_SUBJECTS),
        row("MAX_REASON_LEN", MAX_REASON_LEN),
        row("MAX_CLOCK_SKEW", ms(MAX_CLOCK_SKEW)),
        row("MAX_CARD_LIFETIME", ms(MAX_CARD_LIFETIME)),
        row("MAX_TOMBSTONE_LIFETIME", ms(MAX_TOMBSTONE_LIFETIME)),
        row("MAX_ATTESTATION_LIFETIME", ms(MAX_ATTESTATION_LIFETIME)),
        row("MAX_PAUSE_LIFETIME", ms(MAX_PAUSE_LIFETIME)),
        row("MAX_INTENT_TTL", ms(MAX_INTENT_TTL)),
        row("MAX_RECEIPT_LATENCY", ms(MAX_RECEIPT_LATENCY)),
        row("MAX_SYNC_RANGES", MAX_SYNC_RANGES),
        row("MAX_SYNC_ITEMS", MAX_SYNC_ITEMS),
        row("MAX_SYNC_FETCH_KEYS", MAX_SYNC_FETCH_KEYS),
        row("MAX_SYNC_RECORDS", MAX_SYNC_RECORDS),
        row("MAX_SYNC_KEY_LEN", MAX_SYNC_KEY_LEN),
        row("MAX_SYNC_MESSAGE_LEN", MAX_SYNC_MESSAGE_LEN),
        row("MAX_INTENT_RESPONSE_LEN", MAX_INTENT_RESPONSE_LEN),
    ];
    for expected in rows {
        assert!(
            PROTOCOL.contains(&expected),
            "specs/protocol.md lacks the row {expected}"
        );
    }
}

#[test]
fn every_kind_and_domain_tag_is_in_the_spec() {
    for kind in Kind::ALL {
        let tag = std::str::from_utf8(kind.domain_tag()).expect("ascii tag");
        let tag = tag.strip_suffix('\0').expect("zero-terminated");
        let expected = format!("| {kind} | {} | `{tag}\\0` |", kind as u32);
        assert!(
            PROTOCOL.contains(&expected),
            "specs/protocol.md lacks {expected}"
        );
    }
}

#[test]
fn protocol_ids_and_topics_are_in_the_spec() {
    for (name, value) in [
        ("INTENT_PROTOCOL", ids::INTENT_PROTOCOL),
        ("SYNC_PROTOCOL", ids::SYNC_PROTOCOL),
        ("KAD_PROTOCOL", ids::KAD_PROTOCOL),
        ("IDENTIFY_PROTOCOL_VERSION", ids::IDENTIFY_PROTOCOL_VERSION),
    ] {
        let expected = format!("`{value}` (`{name}`)");
        assert!(
            PROTOCOL.contains(&expected),
            "specs/protocol.md lacks {expected}"
        );
    }
    for (name, topic) in [
        ("REGISTRY_TOPIC", ids::REGISTRY_TOPIC),
        ("ATTESTATION_TOPIC", ids::ATTESTATION_TOPIC),
        ("PAUSE_TOPIC", ids::PAUSE_TOPIC),
    ] {
        let kinds: Vec<String> = ids::topic_kinds(topic)
            .iter()
            .map(|k| k.to_string())
            .collect();
        let expected = format!("| `{name}` | `{topic}` | {} |", kinds.join(", "));
        assert!(
            PROTOCOL.contains(&expected),
            "specs/protocol.md lacks {expected}"
        );
    }
    assert!(ids::topic_kinds("agentnet/other/1").is_empty());
}

#[test]
fn identity_spec_states_the_codec_and_file_header() {
    assert!(IDENTITY.contains("`0xed 0x01`"));
    assert!(IDENTITY.contains(agentnet_protocol::KEY_FILE_HEADER));
    assert!(IDENTITY.contains(&format!(
        "longer than {} bytes",
        agentnet_protocol::MAX_DID_LEN
    )));
}

#[test]
fn every_protocol_id_doc_links_its_spec_section() {
    let source = include_str!("../../src/ids.rs");
    for constant in source.lines().filter(|l| l.starts_with("pub const ")) {
        let name = constant["pub const ".len()..]
            .split(':')
            .next()
            .expect("name");
        let doc: Vec<&str> = source
            .lines()
            .take_while(|l| *l != constant)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take_while(|l| l.starts_with("///"))
            .collect();
        let link = doc
            .iter()
            .find_map(|l| l.split("specs/protocol.md#").nth(1))
            .unwrap_or_else(|| panic!("{name} has no link to specs/protocol.md"));
        let anchor = link.split([')', '`']).next().expect("anchor");
        let heading = PROTOCOL
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| {
                l.trim_start_matches('#')
                    .trim()
                    .to_lowercase()
                    .replace(' ', "-")
            })
            .any(|h| h == anchor);
        assert!(
            heading,
            "{name} links #{anchor}, which is no heading in specs/protocol.md"
        );
    }
}
