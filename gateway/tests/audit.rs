//! The audit chain on real Postgres: every action is recorded; a row edited, deleted or
//! cut from the tail is found; a forged checkpoint is found; each organisation's chain is
//! its own. Membership credentials verify with ssi against the gateway's `did:key`.

mod common;

use agentnet_gateway::audit::{self, CHECKPOINT_EVERY};
use agentnet_gateway::keys::{self, KeyRequest};
use agentnet_gateway::orgs::{self, AgentRequest};
use agentnet_gateway::{Gateway, Role};
use agentnet_protocol::{Keypair, PublicKey};
use common::*;

async fn verify(gw: &Gateway, org: uuid::Uuid) -> audit::Verification {
    let key: PublicKey = gw.audit().key().public();
    audit::verify(gw.db().pool(), org, &key)
        .await
        .expect("verify")
}

async fn some_actions(gw: &Gateway, admin: &keys::Principal, n: usize) {
    for i in 0..n {
        orgs::create_team(gw, admin, &format!("team-{i}"))
            .await
            .expect("team");
    }
}

async fn sql(gw: &Gateway, q: &str) {
    sqlx::query(sqlx::AssertSqlSafe(q.to_owned()))
        .execute(gw.db().pool())
        .await
        .expect("tamper");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_or_deleted_row_is_found() {
    let t = gateway().await;
    let gw = &t.gw;
    let (a, _) = admin(gw, "org-a").await;
    let (b, _) = admin(gw, "org-b").await;
    some_actions(gw, &a, 5).await;
    some_actions(gw, &b, 5).await;
    let ok = verify(gw, a.org_id).await;
    assert!(ok.intact, "{ok:?}");
    assert_eq!(ok.rows, 6, "org.create and five team.create");
    let rows = audit::list(gw.db().pool(), a.org_id, 0, 100)
        .await
        .expect("list");
    assert_eq!(
        rows.iter().map(|r| r.action.as_str()).collect::<Vec<_>>()[..2],
        ["org.create", "team.create"]
    );

    sql(
        gw,
        &format!(
            "UPDATE audit_log SET detail = 'name=innocent' WHERE org_id = '{}' AND seq = 3",
            a.org_id
        ),
    )
    .await;
    let broken = verify(gw, a.org_id).await;
    assert!(!broken.intact);
    assert_eq!(broken.first_broken, Some(3), "{broken:?}");
    assert!(
        verify(gw, b.org_id).await.intact,
        "another org's chain is its own"
    );

    sql(
        gw,
        &format!(
            "DELETE FROM audit_log WHERE org_id = '{}' AND seq = 4",
            b.org_id
        ),
    )
    .await;
    let broken = verify(gw, b.org_id).await;
    assert_eq!(broken.first_broken, Some(4), "{broken:?}");

    // Recomputing the edited row's hash does not help: the next row's link breaks.
    let t2 = gateway().await;
    let (c, _) = admin(&t2.gw, "org-c").await;
    some_actions(&t2.gw, &c, 3).await;
    sql(&t2.gw, &format!("UPDATE audit_log SET actor = 'nobody', hash = sha256(hash) WHERE org_id = '{}' AND seq = 2", c.org_id)).await;
    let broken = verify(&t2.gw, c.org_id).await;
    assert_eq!(broken.first_broken, Some(2), "{broken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_pin_the_tail_and_cannot_be_forged() {
    let t = gateway().await;
    let gw = &t.gw;
    let (a, _) = admin(gw, "org-a").await;
    // CHECKPOINT_EVERY rows bring the first checkpoint.
    some_actions(gw, &a, CHECKPOINT_EVERY as usize + 9).await;
    let ok = verify(gw, a.org_id).await;
    assert!(ok.intact, "{ok:?}");
    assert_eq!(ok.checkpoints, 1);
    assert_eq!(ok.checkpointed_seq, Some(CHECKPOINT_EVERY));
    // The periodic checkpoint covers the head.
    assert_eq!(
        gw.audit()
            .checkpoint_all(gw.db().pool())
            .await
            .expect("checkpoint"),
        1
    );
    let ok = verify(gw, a.org_id).await;
    assert_eq!(ok.checkpointed_seq, Some(CHECKPOINT_EVERY + 10));
    assert_eq!(
        gw.audit()
            .checkpoint_all(gw.db().pool())
            .await
            .expect("checkpoint"),
        0,
        "nothing new"
    );

    // Cutting the tail leaves an intact-looking chain, but the checkpoint misses its row.
    sql(
        gw,
        &format!(
            "DELETE FROM audit_log WHERE org_id = '{}' AND seq > 105",
            a.org_id
        ),
    )
    .await;
    let broken = verify(gw, a.org_id).await;
    assert!(!broken.intact);
    assert_eq!(broken.first_broken, Some(106), "{broken:?}");

    // A checkpoint signed by another key is a forgery.
    let t2 = gateway().await;
    let (b, _) = admin(&t2.gw, "org-b").await;
    some_actions(&t2.gw, &b, 2).await;
    let forger = Keypair::generate().expect("key");
    let head = audit::list(t2.gw.db().pool(), b.org_id, 2, 1)
        .await
        .expect("head");
    let hash = hex::decode(&head[0].hash).expect("hex");
    let at_ms = 1_000;
    let signature = forger.sign(&audit::checkpoint_message(b.org_id, 3, &hash, at_ms));
    sqlx::query("INSERT INTO audit_checkpoints (org_id, seq, hash, at_ms, signer, signature) VALUES ($1, 3, $2, $3, $4, $5)")
        .bind(b.org_id)
        .bind(&hash)
        .bind(at_ms)
        .bind(t2.gw.did().as_str())
        .bind(&signature[..])
        .execute(t2.gw.db().pool())
        .await
        .expect("forge");
    let broken = verify(&t2.gw, b.org_id).await;
    assert!(!broken.intact);
    assert!(
        broken
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("not signed"),
        "{broken:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_action_is_recorded() {
    let t = gateway().await;
    let gw = &t.gw;
    let (a, _) = admin(gw, "org-a").await;
    let team = orgs::create_team(gw, &a, "ops").await.expect("team");
    let key = keys::create_key(
        gw,
        &a,
        &KeyRequest {
            name: "ci".into(),
            role: Role::Developer,
            team_id: Some(team.id),
            member_id: None,
            scopes: vec![],
            expires_at_ms: None,
        },
    )
    .await
    .expect("key");
    keys::rotate(gw, &a, &key.key_id, 60).await.expect("rotate");
    keys::revoke(gw, &a, &key.key_id).await.expect("revoke");
    let did = agent_did();
    orgs::create_agent(
        gw,
        &a,
        &AgentRequest {
            did: did.clone(),
            name: "bot".into(),
            team_id: None,
        },
    )
    .await
    .expect("agent");
    orgs::delete_agent(gw, &a, &did).await.expect("delete");
    let actions: Vec<String> = audit::list(gw.db().pool(), a.org_id, 0, 100)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        [
            "org.create",
            "team.create",
            "key.create",
            "key.rotate",
            "key.revoke",
            "agent.create",
            "agent.delete"
        ]
    );
    assert!(verify(gw, a.org_id).await.intact);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_credentials_verify_with_ssi() {
    use ssi::claims::VerificationParameters;
    use ssi::claims::jws::JwsStr;
    use ssi::claims::jwt::ToDecodedJwt;
    use ssi::dids::{DIDKey, DIDResolver};
    use ssi::verification_methods::AnyJwkMethod;

    let t = gateway().await;
    let gw = &t.gw;
    let (a, _) = admin(gw, "acme").await;
    let did = agent_did();
    let agent = orgs::create_agent(
        gw,
        &a,
        &AgentRequest {
            did: did.clone(),
            name: "bot".into(),
            team_id: None,
        },
    )
    .await
    .expect("agent");
    let vc = &agent.credential;
    assert_eq!(
        vc["issuer"],
        gw.did().as_str(),
        "nodes read the issuer from the JSON"
    );
    assert_eq!(vc["credentialSubject"]["id"], did.as_str());
    assert_eq!(vc["credentialSubject"]["memberOf"]["name"], "acme");
    let jwt = vc["proof"]["jwt"].as_str().expect("jwt");

    let jws = JwsStr::new(jwt).expect("compact JWS");
    let decoded = jws.to_decoded_jwt().expect("decode");
    let kid = decoded.header().key_id.clone().expect("kid");
    assert!(kid.starts_with(&format!("{}#", gw.did())), "{kid}");
    let params = VerificationParameters::from_resolver(DIDKey.into_vm_resolver::<AnyJwkMethod>());
    decoded
        .verify(&params)
        .await
        .expect("resolvable")
        .expect("the signature is the gateway's");

    // A credential re-signed by someone else does not verify as the gateway's.
    let mut parts: Vec<&str> = jwt.split('.').collect();
    let other = agentnet_gateway::credentials::membership(
        &Keypair::generate().expect("key"),
        &did.parse().expect("did"),
        a.org_id,
        "acme",
    )
    .expect("vc");
    let other_jwt = other["proof"]["jwt"].as_str().expect("jwt").to_owned();
    let other_sig = other_jwt.rsplit('.').next().expect("sig");
    parts[2] = other_sig;
    let spliced = parts.join(".");
    let decoded = JwsStr::new(&spliced)
        .expect("jws")
        .to_decoded_jwt()
        .expect("decode");
    let verdict = decoded.verify(&params).await;
    assert!(
        !matches!(verdict, Ok(Ok(()))),
        "a spliced signature must not verify"
    );
}
