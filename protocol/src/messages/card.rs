//! Agent cards and tombstones: what the registry holds.

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use super::{Wire, message};
use crate::did::Did;
use crate::envelope::Kind;
use crate::limits::*;
use crate::proto;
use crate::time::Timestamp;
use crate::validate::{self as v, Result, ValidationContext, ValidationError};

/// A price: an amount in millionths ("micros") of a currency unit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Price {
    /// The amount in micros; at most [`MAX_AMOUNT_MICROS`].
    pub amount_micros: u64,
    /// A currency code of 1 to 8 ASCII letters or digits, such as `USD` or `credits`.
    pub currency: String,
}

impl Price {
    pub(crate) fn check(&self, field: &str) -> Result {
        v::price(field, self.amount_micros, &self.currency)
    }

    pub(crate) fn from_proto(p: proto::Price) -> Self {
        Price {
            amount_micros: p.amount_micros,
            currency: p.currency,
        }
    }

    pub(crate) fn to_proto(&self) -> proto::Price {
        proto::Price {
            amount_micros: self.amount_micros,
            currency: self.currency.clone(),
        }
    }
}

/// Something an agent can do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capability {
    /// A token (`A-Z a-z 0-9 . _ : / + -`), unique within the card. Intents name it.
    pub name: String,
    /// Free text that discovery embeds and searches.
    pub description: String,
    /// Tokens for filtering, unique within the capability.
    pub tags: Vec<String>,
    /// The capability's version, free text on one line; may be empty.
    pub version: String,
    /// Price per call, if any.
    pub price: Option<Price>,
}

/// A verifiable credential attached to a card, such as an organisation membership.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credential {
    /// The media type of `data`, e.g. `application/vc+ld+json`.
    pub format: String,
    /// The credential itself.
    pub data: Vec<u8>,
}

/// An agent's signed self-description, published to the registry.
///
/// The agent's key signs the card, and with it the claim that `host` is the node that
/// serves it (`specs/identity.md#agents-and-their-hosts`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCard {
    /// The agent. Only this DID may sign the card.
    pub did: Did,
    /// A display name, 1 to [`MAX_NAME_LEN`] bytes on one line.
    pub name: String,
    /// Free text, up to [`MAX_DESCRIPTION_LEN`] bytes.
    pub description: String,
    /// What the agent can do; names are unique.
    pub capabilities: Vec<Capability>,
    /// Where the agent can be reached besides its host node (URLs or multiaddrs).
    pub endpoints: Vec<String>,
    /// The PeerId of the node that hosts the agent and receives its intents.
    pub host: PeerId,
    /// Version of the card; a card replaces another of the same DID only with a higher `seq`.
    pub seq: u64,
    /// When the agent signed it.
    pub issued_at: Timestamp,
    /// When it stops being valid; at most [`MAX_CARD_LIFETIME`] after `issued_at`.
    pub expires_at: Timestamp,
    /// Attached credentials.
    pub credentials: Vec<Credential>,
}

impl AgentCard {
    fn check_static(&self) -> Result {
        v::name("name", &self.name, MAX_NAME_LEN)?;
        v::text("description", &self.description, MAX_DESCRIPTION_LEN, true)?;
        v::count("capabilities", self.capabilities.len(), MAX_CAPABILITIES)?;
        for (i, cap) in self.capabilities.iter().enumerate() {
            let field = |f: &str| format!("capabilities[{i}].{f}");
            v::token(&field("name"), &cap.name, MAX_CAPABILITY_NAME_LEN)?;
            v::text(
                &field("description"),
                &cap.description,
                MAX_CAPABILITY_DESCRIPTION_LEN,
                true,
            )?;
            v::count(&field("tags"), cap.tags.len(), MAX_TAGS)?;
            for (j, tag) in cap.tags.iter().enumerate() {
                v::token(&format!("capabilities[{i}].tags[{j}]"), tag, MAX_TAG_LEN)?;
            }
            v::unique(&field("tags"), &cap.tags)?;
            v::text(&field("version"), &cap.version, MAX_VERSION_LEN, false)?;
            if let Some(price) = &cap.price {
                price.check(&field("price"))?;
            }
        }
        v::unique(
            "capabilities.name",
            self.capabilities.iter().map(|c| &c.name),
        )?;
        v::count("endpoints", self.endpoints.len(), MAX_ENDPOINTS)?;
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            v::name(&format!("endpoints[{i}]"), endpoint, MAX_ENDPOINT_LEN)?;
        }
        v::count("credentials", self.credentials.len(), MAX_CREDENTIALS)?;
        for (i, cred) in self.credentials.iter().enumerate() {
            v::token(
                &format!("credentials[{i}].format"),
                &cred.format,
                MAX_CREDENTIAL_FORMAT_LEN,
            )?;
            if cred.data.is_empty() {
                return Err(ValidationError::Missing {
                    field: format!("credentials[{i}].data"),
                });
            }
            v::bytes_len(
                &format!("credentials[{i}].data"),
                cred.data.len(),
                MAX_CREDENTIAL_LEN,
            )?;
        }
        if self.seq == 0 {
            return Err(ValidationError::invalid("seq", "must be at least 1"));
        }
        v::set("issued_at", self.issued_at)?;
        v::lifetime(
            Kind::AgentCard,
            "expires_at",
            self.issued_at,
            self.expires_at,
            MAX_CARD_LIFETIME,
        )
    }

    fn check_times(&self, ctx: &ValidationContext) -> Result {
        v::not_future(ctx, "issued_at", self.issued_at)?;
        v::not_expired(ctx, "expires_at", self.expires_at)
    }

    fn check_signed_by(&self, signer: &Did) -> Result {
        v::signer_is(Kind::AgentCard, "did", &self.did, signer)
    }

    /// The capability with this name.
    pub fn capability(&self, name: &str) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.name == name)
    }
}

message!(AgentCard, Kind::AgentCard);

impl Wire for AgentCard {
    type Proto = proto::AgentCard;

    fn from_proto(p: proto::AgentCard) -> Result<Self> {
        Ok(AgentCard {
            did: v::did("did", &p.did)?,
            name: p.name,
            description: p.description,
            capabilities: p
                .capabilities
                .into_iter()
                .map(|c| Capability {
                    name: c.name,
                    description: c.description,
                    tags: c.tags,
                    version: c.version,
                    price: c.price.map(Price::from_proto),
                })
                .collect(),
            endpoints: p.endpoints,
            host: PeerId::from_bytes(&p.host).map_err(|e| {
                ValidationError::invalid("host", format!("is not a libp2p PeerId: {e}"))
            })?,
            seq: p.seq,
            issued_at: Timestamp::from_millis(p.issued_at_ms),
            expires_at: Timestamp::from_millis(p.expires_at_ms),
            credentials: p
                .credentials
                .into_iter()
                .map(|c| Credential {
                    format: c.format,
                    data: c.data,
                })
                .collect(),
        })
    }

    fn to_proto(&self) -> proto::AgentCard {
        proto::AgentCard {
            did: self.did.to_string(),
            name: self.name.clone(),
            description: self.description.clone(),
            capabilities: self
                .capabilities
                .iter()
                .map(|c| proto::Capability {
                    name: c.name.clone(),
                    description: c.description.clone(),
                    tags: c.tags.clone(),
                    version: c.version.clone(),
                    price: c.price.as_ref().map(Price::to_proto),
                })
                .collect(),
            endpoints: self.endpoints.clone(),
            host: self.host.to_bytes(),
            seq: self.seq,
            issued_at_ms: self.issued_at.as_millis(),
            expires_at_ms: self.expires_at.as_millis(),
            credentials: self
                .credentials
                .iter()
                .map(|c| proto::Credential {
                    format: c.format.clone(),
                    data: c.data.clone(),
                })
                .collect(),
        }
    }
}

/// A signed deregistration. It replaces the agent's card (it must carry a higher `seq`
/// than the card it removes) and is kept until it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The agent. Only this DID may sign the tombstone.
    pub did: Did,
    /// Higher than the `seq` of every card it replaces.
    pub seq: u64,
    /// When it was signed.
    pub issued_at: Timestamp,
    /// When nodes may forget it; at most [`MAX_TOMBSTONE_LIFETIME`] after `issued_at`.
    pub expires_at: Timestamp,
}

impl Tombstone {
    fn check_static(&self) -> Result {
        if self.seq == 0 {
            return Err(ValidationError::invalid("seq", "must be at least 1"));
        }
        v::set("issued_at", self.issued_at)?;
        v::lifetime(
            Kind::Tombstone,
            "expires_at",
            self.issued_at,
            self.expires_at,
            MAX_TOMBSTONE_LIFETIME,
        )
    }

    fn check_times(&self, ctx: &ValidationContext) -> Result {
        v::not_future(ctx, "issued_at", self.issued_at)?;
        v::not_expired(ctx, "expires_at", self.expires_at)
    }

    fn check_signed_by(&self, signer: &Did) -> Result {
        v::signer_is(Kind::Tombstone, "did", &self.did, signer)
    }
}

message!(Tombstone, Kind::Tombstone);

impl Wire for Tombstone {
    type Proto = proto::Tombstone;

    fn from_proto(p: proto::Tombstone) -> Result<Self> {
        Ok(Tombstone {
            did: v::did("did", &p.did)?,
            seq: p.seq,
            issued_at: Timestamp::from_millis(p.issued_at_ms),
            expires_at: Timestamp::from_millis(p.expires_at_ms),
        })
    }

    fn to_proto(&self) -> proto::Tombstone {
        proto::Tombstone {
            did: self.did.to_string(),
            seq: self.seq,
            issued_at_ms: self.issued_at.as_millis(),
            expires_at_ms: self.expires_at.as_millis(),
        }
    }
}
