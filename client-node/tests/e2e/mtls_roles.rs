//! The coordinator over real mTLS on 127.0.0.1: each role may call only its
//! own RPCs, a node only as itself and with its certificate's key, and
//! certificates from a foreign CA, expired or revoked are refused.

use std::path::Path;
use std::time::{Duration, SystemTime};

use coordinator::CoordinatorConfig;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use veil_pki::{
    CertificateRequest, FederationCa, IssuedCertificate, MemberFiles, REVOCATIONS_FILE,
    RevocationList, RevocationReason, Role, Validity,
};
use veil_wire::v1::node_service_client::NodeServiceClient;
use veil_wire::v1::operator_service_client::OperatorServiceClient;
use veil_wire::v1::{self, result_chunk};

use crate::support;

fn week() -> Validity {
    Validity::starting_now(Duration::from_secs(7 * 86_400))
}

fn issue(
    ca: &FederationCa,
    dir: &Path,
    role: Role,
    name: &str,
) -> (MemberFiles, IssuedCertificate) {
    MemberFiles::issue_into(
        ca,
        &CertificateRequest::member(role, name, week()),
        &dir.join(name),
    )
    .unwrap()
}

async fn channel(port: u16, member: &MemberFiles) -> Result<Channel, String> {
    let tls = member.client().map_err(|error| error.to_string())?;
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls.tonic_config())
        .map_err(|error| error.to_string())?
        .connect()
        .await
        .map_err(|error| format!("{error:?}"))
}

fn job() -> v1::JobSpec {
    veil_job::standard_job("2024-10-02", 90).to_wire()
}

fn register_request(node_id: &str, files: &MemberFiles) -> v1::RegisterRequest {
    let (_, certificate_pem, key) = files.load().unwrap();
    v1::RegisterRequest {
        node_id: node_id.to_owned(),
        software_version: "test".to_owned(),
        identity_public_key: key.public_key().0.to_vec(),
        certificate_der: veil_pki::certificate_der_from_pem(&certificate_pem).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_names_keys_and_certificate_status_are_enforced_per_rpc() {
    let _machine = support::share_of_machine().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = FederationCa::create("roles-test", week()).unwrap();
    ca.save(&dir.path().join("ca")).unwrap();
    let (coordinator_files, _) = MemberFiles::issue_into(
        &ca,
        &CertificateRequest::coordinator("coordinator", vec!["127.0.0.1".into()], week()),
        &dir.path().join("coordinator"),
    )
    .unwrap();
    let (operator, _) = issue(&ca, dir.path(), Role::Operator, "operator");
    let (auditor, _) = issue(&ca, dir.path(), Role::Auditor, "auditor");
    let (node_a, _) = issue(&ca, dir.path(), Role::Node, "node-a");
    let (node_b, node_b_certificate) = issue(&ca, dir.path(), Role::Node, "node-b");
    let foreign_ca = FederationCa::create("someone-else", week()).unwrap();
    let (foreign_operator, _) = MemberFiles::issue_into(
        &foreign_ca,
        &CertificateRequest::member(Role::Operator, "operator", week()),
        &dir.path().join("foreign"),
    )
    .unwrap();
    let now = SystemTime::now();
    let (expired_operator, _) = MemberFiles::issue_into(
        &ca,
        &CertificateRequest::member(
            Role::Operator,
            "old-operator",
            Validity {
                not_before: now - Duration::from_secs(3 * 86_400),
                not_after: now - Duration::from_secs(86_400),
            },
        ),
        &dir.path().join("old-operator"),
    )
    .unwrap();

    let revocations = RevocationList::open(dir.path().join("ca").join(REVOCATIONS_FILE)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(coordinator::run(
        CoordinatorConfig::mtls(coordinator_files.server(revocations.clone()).unwrap()),
        listener,
        std::future::pending(),
    ));

    // The operator may submit and start; a node and an auditor may not.
    let mut as_operator = OperatorServiceClient::new(channel(port, &operator).await.unwrap());
    let job_id = as_operator
        .submit_job(v1::SubmitJobRequest { spec: Some(job()) })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let mut node_as_operator = OperatorServiceClient::new(channel(port, &node_a).await.unwrap());
    let refused = node_as_operator
        .submit_job(v1::SubmitJobRequest { spec: Some(job()) })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let mut as_auditor = OperatorServiceClient::new(channel(port, &auditor).await.unwrap());
    let refused = as_auditor
        .start_job(v1::JobRef {
            job_id: job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Auditors read.
    as_auditor
        .get_job_status(v1::JobRef {
            job_id: job_id.clone(),
        })
        .await
        .unwrap();
    // Privacy tests are the auditor's: it may submit and start one (and only
    // one), an operator may not name canaries, and an auditor may not submit,
    // start or export an ordinary job, nor record a result against one.
    let audit_job = v1::JobSpec {
        privacy_audit: Some(v1::PrivacyAudit {
            partner: "node-a".to_owned(),
            commitment: vec![9; 32],
        }),
        ..job()
    };
    let refused = as_operator
        .submit_job(v1::SubmitJobRequest {
            spec: Some(audit_job.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = as_auditor
        .submit_job(v1::SubmitJobRequest { spec: Some(job()) })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = as_auditor
        .fetch_model_info(v1::JobRef {
            job_id: job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = as_auditor
        .record_privacy_audit(v1::PrivacyAuditResult {
            job_id: job_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let audit_job_id = as_auditor
        .submit_job(v1::SubmitJobRequest {
            spec: Some(audit_job),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    as_auditor
        .start_job(v1::JobRef {
            job_id: audit_job_id.clone(),
        })
        .await
        .unwrap();
    let refused = as_operator
        .start_job(v1::JobRef {
            job_id: audit_job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = as_operator
        .record_privacy_audit(v1::PrivacyAuditResult {
            job_id: audit_job_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // The operator still stops any job, audits included.
    as_operator
        .cancel_job(v1::JobRef {
            job_id: audit_job_id,
        })
        .await
        .unwrap();
    // An operator is not a node.
    let mut operator_as_node = NodeServiceClient::new(channel(port, &operator).await.unwrap());
    let refused = operator_as_node
        .register(register_request("operator", &operator))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // A node acts only as itself, and only with its certificate's key.
    let mut as_node_a = NodeServiceClient::new(channel(port, &node_a).await.unwrap());
    as_node_a
        .register(register_request("node-a", &node_a))
        .await
        .unwrap();
    let refused = as_node_a
        .register(register_request("node-b", &node_b))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = as_node_a
        .register(v1::RegisterRequest {
            identity_public_key: vec![7; 32],
            ..register_request("node-a", &node_a)
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = as_node_a
        .heartbeat(v1::HeartbeatRequest {
            node_id: "node-b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Its receipts, and no one else's.
    let own = as_node_a
        .fetch_receipts(v1::FetchReceiptsRequest {
            node_id: "node-a".into(),
            after_seq: None,
        })
        .await;
    assert!(
        own.is_ok() || own.as_ref().unwrap_err().code() == Code::Unavailable,
        "{own:?}"
    );
    let refused = as_node_a
        .fetch_receipts(v1::FetchReceiptsRequest {
            node_id: "node-b".into(),
            after_seq: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let header = v1::ResultChunk {
        body: Some(result_chunk::Body::Header(v1::ResultHeader {
            node_id: "node-b".into(),
            job_id: job_id.clone(),
            round: 0,
            phase: v1::Phase::FeatureStats as i32,
            decline_code: veil_federation::DeclineCode::PolicyPlainAggregation.wire_value(),
            ..Default::default()
        })),
    };
    let refused = as_node_a
        .submit_result(tokio_stream::iter(vec![header]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Foreign, expired and plaintext callers never reach a handler.
    assert!(
        channel(port, &foreign_operator).await.is_err() || {
            let mut client =
                OperatorServiceClient::new(channel(port, &foreign_operator).await.unwrap());
            client
                .get_job_status(v1::JobRef {
                    job_id: job_id.clone(),
                })
                .await
                .is_err()
        }
    );
    let expired = match channel(port, &expired_operator).await {
        Err(_) => true,
        Ok(channel) => OperatorServiceClient::new(channel)
            .get_job_status(v1::JobRef {
                job_id: job_id.clone(),
            })
            .await
            .is_err(),
    };
    assert!(expired, "an expired certificate was accepted");
    let plaintext = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    let plaintext_refused = match plaintext {
        Err(_) => true,
        Ok(channel) => OperatorServiceClient::new(channel)
            .get_job_status(v1::JobRef {
                job_id: job_id.clone(),
            })
            .await
            .is_err(),
    };
    assert!(plaintext_refused, "a plaintext client was served");

    // Revocation takes effect at once, even on a connection already open.
    let mut as_node_b = NodeServiceClient::new(channel(port, &node_b).await.unwrap());
    as_node_b
        .register(register_request("node-b", &node_b))
        .await
        .unwrap();
    revocations
        .revoke(&node_b_certificate.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let refused = as_node_b
        .heartbeat(v1::HeartbeatRequest {
            node_id: "node-b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let fresh = match channel(port, &node_b).await {
        Err(_) => true,
        Ok(channel) => NodeServiceClient::new(channel)
            .heartbeat(v1::HeartbeatRequest {
                node_id: "node-b".into(),
            })
            .await
            .is_err(),
    };
    assert!(fresh, "a revoked certificate connected again");
}
