//! A declaration's store (docs/concepts.md: a node's certificate store) from what
//! the shell read: each ObservedCertificate the spec names, its `-store`
//! Secret, and the object `spec.trustBundle` names. Pure: every reason the
//! store cannot be had is a [`Blocked`] naming the field.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use super::memo::FactsMemo;
use crate::blocked::{BlockReason, Blocked};
use crate::crd::{ClusterCertificateDeclarationSpec, ObservedCertificate, TrustBundleSource};
use crate::facts::{CertificateFacts, PrivateKeyState, parse_crls};
use crate::observed::{store_keys, stored_material, unreadable_source};
use crate::outputs::secret_data;
use crate::outputs::{PresentedMaterial, is_owned_by, store_name};
use crate::planner::Store;
use crate::thumbprint::Thumbprint;
use crate::trust::TrustPool;

/// One `spec.store.observedCertificates` entry as read.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedInput {
    pub name: String,
    pub object: Option<Arc<ObservedCertificate>>,
    /// Its `<name>-store` Secret, if there is one (owned or not: judged here).
    pub stored: Option<Arc<Secret>>,
}

/// The object `spec.trustBundle` names, as read.
#[derive(Clone, Debug, PartialEq)]
pub enum TrustBundleInput {
    ConfigMap(Option<Arc<ConfigMap>>),
    Secret(Option<Arc<Secret>>),
}

/// What the shell read for the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreInputs {
    pub observed: Vec<ObservedInput>,
    /// `None` when the spec names no trust bundle.
    pub trust_bundle: Option<TrustBundleInput>,
    /// The objects of `spec.revocation.crls`, in order.
    pub crls: Vec<TrustBundleInput>,
    /// What fetching each CRL distribution point gave, by URI.
    pub fetched: BTreeMap<String, FetchState>,
    /// The CA certificates of the revision published now (its validation
    /// ConfigMap's `ca-bundle.crt` and `intermediates.crt`), PEM: an anchor
    /// the trust bundle dropped is still trusted by members until its
    /// removal is published, and revisions until then carry it.
    pub in_force: String,
}

/// A CRL distribution point as the shell fetched it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchState {
    /// The last CRL fetched (its bytes).
    pub last: Option<Vec<u8>>,
    /// Why the last attempt failed, if it did.
    pub error: Option<String>,
}

fn distribution_points_enabled(spec: &ClusterCertificateDeclarationSpec) -> bool {
    spec.revocation
        .as_ref()
        .and_then(|r| r.distribution_points.as_ref())
        .is_some_and(|d| d.enabled)
}

/// The store's instances with the material to present them, and every CA
/// certificate known (the trust bundle's, the store's chains' and `ca.crt`
/// entries) as PEM: what each revision's `ca-bundle.crt` and
/// `intermediates.crt` are cut from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreContents {
    pub store: Store,
    pub materials: BTreeMap<Thumbprint, PresentedMaterial>,
    pub authorities: BTreeMap<Thumbprint, String>,
    /// The CRLs in force, PEM (`crls.pem` of every revision).
    pub crls: String,
    /// The `http://` CRL distribution points of the store's certificates and
    /// the CAs on their paths, sorted.
    pub distribution_points: Vec<String>,
}

/// PEM with LF line endings, as the files it is put beside (`pem` defaults to CRLF).
fn pem_of(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}

/// The store of a declaration in `namespace`, or why it cannot be had:
/// [`collect`], then [`Collected::finish`] with the CRLs.
pub fn assemble(
    namespace: &str,
    spec: &ClusterCertificateDeclarationSpec,
    inputs: &StoreInputs,
    now: jiff::Timestamp,
) -> Result<StoreContents, Blocked> {
    collect(namespace, spec, inputs, &FactsMemo::default())?.finish(namespace, spec, inputs, now)
}

/// A store before its CRLs: its instances with their material, and every CA
/// known. The shell fetches the CRLs of [`Collected::distribution_points`]
/// between the two halves, so that the store is assembled once.
#[derive(Debug)]
pub struct Collected {
    contents: StoreContents,
    pool: TrustPool,
    /// The distribution points on the store's paths, when fetching is
    /// enabled: the paths are built once for them (CRLs change no path).
    points: Vec<String>,
}

/// The store's instances, their material and every CA known, from the
/// ObservedCertificates, their `-store` Secrets and `spec.trustBundle`;
/// bytes parsed before are taken from `memo`.
pub fn collect(
    namespace: &str,
    spec: &ClusterCertificateDeclarationSpec,
    inputs: &StoreInputs,
    memo: &FactsMemo,
) -> Result<Collected, Blocked> {
    let mut contents = StoreContents::default();
    let mut pool = TrustPool::default();
    let include_store_cas = spec.trust_bundle.as_ref().is_some_and(|t| t.include_store_cas);
    // Leaves whose issuer is linked once every CA is known.
    let mut leaves: Vec<(CertificateFacts, Vec<u8>)> = Vec::new();
    for (index, input) in inputs.observed.iter().enumerate() {
        let status = synced_status(namespace, index, input)?;
        // Only the ObservedCertificate's own `-store` Secret holds its keys.
        let uid = input
            .object
            .as_ref()
            .and_then(|o| o.metadata.uid.as_deref())
            .unwrap_or_default();
        let data = input
            .stored
            .as_deref()
            .filter(|s| {
                s.metadata.name.as_deref() == Some(store_name(&input.name).as_str()) && is_owned_by(&s.metadata, uid)
            })
            .map(secret_data)
            .unwrap_or_default();
        for facts in status.instances {
            let bundle = stored_material(&data, &facts.thumbprint).map(|material| memo.bundle(&material));
            let Some(Ok(bundle)) = bundle.as_deref() else {
                // Recorded but not stored (or unreadable): known, not presentable.
                contents.store.instances.push(CertificateFacts {
                    private_key: PrivateKeyState::Missing,
                    ..facts
                });
                continue;
            };
            let from_ca_crt: Vec<&Thumbprint> = bundle.ca.iter().map(|ca| &ca.thumbprint).collect();
            for ((thumbprint, der), facts) in bundle.authorities_der.iter().zip(bundle.authorities()) {
                debug_assert_eq!(thumbprint, &facts.thumbprint);
                if include_store_cas && from_ca_crt.contains(&thumbprint) {
                    pool.add_anchor(facts.clone(), der.clone());
                } else {
                    pool.add_authority(facts.clone(), der.clone());
                }
            }
            if let Some(material) = material(&data, &facts.thumbprint, bundle) {
                contents.materials.insert(facts.thumbprint.clone(), material);
            }
            leaves.push((bundle.leaf.clone(), bundle.chain_der[0].clone()));
        }
    }
    if let Some(source) = &spec.trust_bundle {
        for (facts, der) in trust_bundle(namespace, source, inputs.trust_bundle.as_ref(), memo)? {
            pool.add_anchor(facts, der);
        }
    }
    // Known, never anchors by this: which anchors a revision trusts is the
    // planner's (the revision's `anchors`). Certshift wrote them; a file it
    // cannot read again only leaves paths shorter.
    if let Ok(in_force) = memo.file("in force", inputs.in_force.as_bytes()).as_ref() {
        for (facts, der) in in_force {
            pool.add_authority(facts.clone(), der.clone());
        }
    }
    for (mut leaf, der) in leaves {
        pool.link(&mut leaf, &der);
        contents.store.instances.push(leaf);
    }
    contents.store.instances.sort_by(|a, b| a.thumbprint.cmp(&b.thumbprint));
    contents.store.instances.dedup_by(|a, b| a.thumbprint == b.thumbprint);
    let points = if distribution_points_enabled(spec) {
        points_on_paths(&pool.build(), &contents.store.instances)
    } else {
        Vec::new()
    };
    Ok(Collected { contents, pool, points })
}

/// The status of the `index`th ObservedCertificate of the store, when it
/// has read its source and recorded instances; otherwise why not.
fn synced_status(
    namespace: &str,
    index: usize,
    input: &ObservedInput,
) -> Result<crate::crd::ObservedCertificateStatus, Blocked> {
    let (name, field) = (&input.name, format!("spec.store.observedCertificates[{index}]"));
    let Some(ocert) = &input.object else {
        return Err(Blocked::new(
            BlockReason::StoreNotFound,
            format!("{field}: ObservedCertificate {namespace}/{name} does not exist"),
        ));
    };
    let status = ocert.status.clone().unwrap_or_default();
    if status.instances.is_empty() {
        return Err(Blocked::new(
            BlockReason::StoreNotSynced,
            format!("{field}: ObservedCertificate {namespace}/{name} has no instances yet"),
        ));
    }
    if let Some((reason, message)) = unreadable_source(&status) {
        return Err(Blocked::new(
            BlockReason::StoreNotSynced,
            format!(
                "{field}: ObservedCertificate {namespace}/{name} cannot read its source ({reason}: {message}); holding the upgrade until it can"
            ),
        ));
    }
    Ok(status)
}

/// What a member presents for a stored instance: its `tls.crt` and
/// `tls.key`, and its `ca.crt` (else the CAs of its chain).
fn material(
    data: &BTreeMap<String, Vec<u8>>,
    thumbprint: &Thumbprint,
    bundle: &crate::facts::CertificateBundle,
) -> Option<PresentedMaterial> {
    let text = |key: &String| data.get(key).map(|v| String::from_utf8_lossy(v).into_owned());
    let [crt, key, ca] = store_keys(thumbprint);
    Some(PresentedMaterial {
        tls_crt: text(&crt)?,
        tls_key: text(&key)?,
        ca_crt: text(&ca).unwrap_or_else(|| bundle.authorities_der.iter().map(|(_, der)| pem_of(der)).collect()),
    })
}

impl Collected {
    /// The `http://` CRL distribution points of the store's certificates and
    /// the CAs on their paths, when `spec.revocation.distributionPoints` is
    /// enabled: what the shell fetches before [`Collected::finish`].
    pub fn distribution_points(&self) -> &[String] {
        &self.points
    }

    /// The store with the CRLs in force: `spec.revocation.crls`, and those
    /// fetched from distribution points (`inputs.fetched`).
    pub fn finish(
        self,
        namespace: &str,
        spec: &ClusterCertificateDeclarationSpec,
        inputs: &StoreInputs,
        now: jiff::Timestamp,
    ) -> Result<StoreContents, Blocked> {
        let Collected {
            mut contents,
            mut pool,
            points,
        } = self;
        contents.crls = put_crls_in_force(&mut pool, namespace, spec, &inputs.crls, now)?;
        if distribution_points_enabled(spec) {
            contents.crls += &put_fetched_crls_in_force(&mut pool, spec, &points, &inputs.fetched, now)?;
        }
        contents.store.trust = pool.build();
        contents.distribution_points = points_on_paths(&contents.store.trust, &contents.store.instances);
        contents.authorities = pool.der().map(|(tp, der)| (tp.clone(), pem_of(der))).collect();
        Ok(contents)
    }
}

/// The CRL distribution points of `instances` and the CAs on their paths, sorted.
fn points_on_paths(trust: &crate::trust::TrustBundle, instances: &[CertificateFacts]) -> Vec<String> {
    let mut points = std::collections::BTreeSet::new();
    for instance in instances {
        for cert in trust.path(instance).certificates {
            points.extend(cert.crl_distribution_points.iter().cloned());
        }
    }
    points.into_iter().collect()
}

/// Reads the CRLs `spec.revocation.crls` names (`inputs`, in order) and puts
/// them in force in `pool`: each must parse, be signed by a CA of the pool
/// of its issuer's name, and be current. Returns them as PEM, for members.
pub fn put_crls_in_force(
    pool: &mut TrustPool,
    namespace: &str,
    spec: &ClusterCertificateDeclarationSpec,
    inputs: &[TrustBundleInput],
    now: jiff::Timestamp,
) -> Result<String, Blocked> {
    let mut pem = String::new();
    for (index, crl_source) in spec.revocation.iter().flat_map(|r| &r.crls).enumerate() {
        let field = format!("spec.revocation.crls[{index}]");
        let (what, bytes) = read_source(
            namespace,
            &field,
            crl_source.config_map_ref.as_ref(),
            crl_source.secret_ref.as_ref(),
            inputs.get(index),
            "ca.crl",
        )
        .map_err(|message| Blocked::new(BlockReason::InvalidRevocationList, message))?;
        let source = format!("{field}: {what}");
        pem += &put_in_force(pool, &source, &bytes, now, "publish a fresh one")?;
    }
    Ok(pem)
}

/// Puts the CRLs of `bytes` (from `source`, for messages) in force in
/// `pool`: each must parse, be signed by a CA of the pool of its issuer's
/// name, and be current at `now` (`stale` says what to do when it is not).
/// Returns them as PEM, for members.
fn put_in_force(
    pool: &mut TrustPool,
    source: &str,
    bytes: &[u8],
    now: jiff::Timestamp,
    stale: &str,
) -> Result<String, Blocked> {
    let crls = parse_crls("crl", bytes).map_err(|err| {
        let message = err.to_string();
        Blocked::new(
            BlockReason::InvalidRevocationList,
            format!("{source}: {} ({})", message.trim_start_matches("crl: "), err.reason()),
        )
    })?;
    let mut pem = String::new();
    for (number, crl) in crls.iter().enumerate() {
        let Some(issuer) = pool.add_crl(crl) else {
            return Err(Blocked::new(
                BlockReason::CrlIssuerNotFound,
                format!(
                    "{source}: CRL {number} is issued by {:?}, and no CA certshift knows (trust bundle, store chains) of that name signed it",
                    crl.issuer
                ),
            ));
        };
        if let Some(next) = crl.next_update.filter(|next| *next < now) {
            return Err(Blocked::new(
                BlockReason::CrlExpired,
                format!("{source}: CRL {number} of {issuer} was due for renewal at {next} (nextUpdate); {stale}"),
            ));
        }
        pem.push_str(&pem::encode_config(
            &pem::Pem::new("X509 CRL", crl.der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
    }
    Ok(pem)
}

/// Puts the CRLs fetched from `points` in force in `pool`, as
/// `spec.revocation.distributionPoints.stalePolicy` says for those that
/// could not be fetched or are past their nextUpdate.
fn put_fetched_crls_in_force(
    pool: &mut TrustPool,
    spec: &ClusterCertificateDeclarationSpec,
    points: &[String],
    fetched: &BTreeMap<String, FetchState>,
    now: jiff::Timestamp,
) -> Result<String, Blocked> {
    use crate::crd::StalePolicy;
    let policy = spec
        .revocation
        .as_ref()
        .and_then(|r| r.distribution_points.as_ref())
        .and_then(|d| d.stale_policy)
        .unwrap_or_default();
    let block = policy == StalePolicy::Block;
    let field = "spec.revocation.distributionPoints";
    let mut pem = String::new();
    for uri in points {
        let state = fetched.get(uri).cloned().unwrap_or_default();
        let Some(bytes) = &state.last else {
            if block {
                let why = state.error.as_deref().unwrap_or("not fetched yet");
                return Err(Blocked::new(
                    BlockReason::CrlUnavailable,
                    format!(
                        "{field}: the CRL at {uri} could not be fetched ({why}); holding new revisions (stalePolicy: Block)"
                    ),
                ));
            }
            continue;
        };
        let refresh = match &state.error {
            Some(err) => format!("fetching it again failed: {err}"),
            None => "the CA has not published a fresh one".to_owned(),
        };
        // UseLast: a CRL past its nextUpdate stays in force.
        let now = if block { now } else { jiff::Timestamp::MIN };
        pem += &put_in_force(pool, &format!("{field}: {uri}"), bytes, now, &refresh)?;
    }
    Ok(pem)
}

/// The key of `spec.trustBundle`'s object that holds the bundle.
pub fn trust_bundle_key(source: &TrustBundleSource) -> String {
    let reference = source.config_map_ref.as_ref().or(source.secret_ref.as_ref());
    reference
        .and_then(|r| r.key.clone())
        .unwrap_or_else(|| "ca.crt".to_owned())
}

/// The anchors of `spec.trustBundle`'s object, when it names one (with
/// `includeStoreCAs` alone it may not).
fn trust_bundle(
    namespace: &str,
    source: &TrustBundleSource,
    input: Option<&TrustBundleInput>,
    memo: &FactsMemo,
) -> Result<Vec<(CertificateFacts, Vec<u8>)>, Blocked> {
    if source.include_store_cas && source.config_map_ref.is_none() && source.secret_ref.is_none() {
        return Ok(Vec::new());
    }
    let blocked = |message: String| Blocked::new(BlockReason::InvalidTrustBundle, message);
    let field = "spec.trustBundle";
    let (what, bytes) = read_source(
        namespace,
        field,
        source.config_map_ref.as_ref(),
        source.secret_ref.as_ref(),
        input,
        "ca.crt",
    )
    .map_err(blocked)?;
    match memo.file("bundle", &bytes).as_ref() {
        Ok(certificates) => Ok(certificates.clone()),
        Err(err) => Err(blocked(format!("{field}: {what}: {}", bundle_error(err)))),
    }
}

/// The bytes of a ConfigMap or Secret key named by `field`, with what
/// they are for messages, or why they cannot be had.
fn read_source(
    namespace: &str,
    field: &str,
    config_map_ref: Option<&crate::crd::KeySelector>,
    secret_ref: Option<&crate::crd::KeySelector>,
    input: Option<&TrustBundleInput>,
    default_key: &str,
) -> Result<(String, Vec<u8>), String> {
    let key = |r: &crate::crd::KeySelector| r.key.clone().unwrap_or_else(|| default_key.to_owned());
    let (what, key, bytes) = match (input, config_map_ref, secret_ref) {
        (Some(TrustBundleInput::ConfigMap(map)), Some(r), None) => {
            let key = key(r);
            // `kubectl create configmap --from-file` puts binary (DER) files in binaryData.
            let bytes = map.as_ref().map(|m| {
                let text = m.data.as_ref().and_then(|d| d.get(&key)).map(|v| v.as_bytes().to_vec());
                text.or_else(|| m.binary_data.as_ref().and_then(|d| d.get(&key)).map(|v| v.0.clone()))
            });
            (format!("ConfigMap {namespace}/{}", r.name), key, bytes)
        }
        (Some(TrustBundleInput::Secret(secret)), None, Some(r)) => {
            let key = key(r);
            let bytes = secret.as_ref().map(|s| secret_data(s).remove(&key));
            (format!("Secret {namespace}/{}", r.name), key, bytes)
        }
        (_, Some(_), Some(_)) => return Err(format!("{field}: set only one of configMapRef and secretRef")),
        _ => return Err(format!("{field}: set configMapRef or secretRef")),
    };
    match bytes {
        None => Err(format!("{field}: {what} does not exist")),
        Some(None) => Err(format!("{field}: {what} has no key {key:?}")),
        Some(Some(bytes)) => Ok((format!("{what} key {key:?}"), bytes)),
    }
}

/// A trust bundle's parse error as the status says it (bounded as
/// [`crate::facts::parse_bundle`] says; the reason named).
fn bundle_error(err: &crate::facts::FactsError) -> String {
    let message = err.to_string();
    format!("{} ({})", message.trim_start_matches("bundle: "), err.reason())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

    use super::*;
    use crate::crd::{KeySelector, ObservedCertificateStatus};
    use crate::facts::{CertificateBundle, inspect};
    use crate::outputs::{MANAGED_BY, MANAGED_BY_LABEL, owner_reference};
    use crate::testing::{Issued, cert, ts};

    struct Pki {
        ca: Issued,
        leaf: Issued,
    }

    fn now() -> jiff::Timestamp {
        ts("2026-06-01T00:00:00Z")
    }

    fn pki() -> Pki {
        let ca = cert("Cluster CA").ca().self_signed();
        let leaf = cert("cluster.example").dns("cluster.example").signed_by(&ca);
        Pki { ca, leaf }
    }

    fn facts_of(pki: &Pki) -> CertificateFacts {
        let material = crate::facts::TlsMaterial {
            tls_crt: pki.leaf.pem.as_bytes(),
            tls_key: None,
            ca_crt: Some(pki.ca.pem.as_bytes()),
        };
        CertificateBundle::from_tls(&material).expect("facts").leaf
    }

    fn ocert(name: &str, instances: Vec<CertificateFacts>) -> Arc<ObservedCertificate> {
        let mut ocert = ObservedCertificate::new(name, Default::default());
        ocert.metadata.namespace = Some("default".into());
        ocert.metadata.uid = Some(format!("uid-{name}"));
        ocert.status = Some(ObservedCertificateStatus {
            instances,
            ..Default::default()
        });
        Arc::new(ocert)
    }

    /// The `-store` Secret the ObservedCertificate controller writes.
    fn stored(owner: &ObservedCertificate, pki: &Pki, owned: bool) -> Arc<Secret> {
        let thumbprint = facts_of(pki).thumbprint;
        let [crt, key, ca] = store_keys(&thumbprint);
        let data = BTreeMap::from([
            (crt, ByteString(pki.leaf.pem.clone().into_bytes())),
            (key, ByteString(pki.leaf.key_pem().into_bytes())),
            (ca, ByteString(pki.ca.pem.clone().into_bytes())),
        ]);
        let name = owner.metadata.name.clone().unwrap_or_default();
        Arc::new(Secret {
            metadata: ObjectMeta {
                name: Some(store_name(&name)),
                labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())])),
                owner_references: owned.then(|| vec![owner_reference(owner)]),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..Secret::default()
        })
    }

    fn spec(names: &[&str]) -> ClusterCertificateDeclarationSpec {
        ClusterCertificateDeclarationSpec {
            store: crate::crd::CertificateStore {
                observed_certificates: names.iter().map(|n| n.to_string()).collect(),
            },
            ..Default::default()
        }
    }

    fn input(name: &str, object: Option<Arc<ObservedCertificate>>, stored: Option<Arc<Secret>>) -> ObservedInput {
        ObservedInput {
            name: name.into(),
            object,
            stored,
        }
    }

    #[test]
    fn an_owned_store_gives_each_instance_its_key_material_and_its_issuers() {
        let pki = pki();
        let owner = ocert("a", vec![facts_of(&pki)]);
        let inputs = StoreInputs {
            observed: vec![input("a", Some(owner.clone()), Some(stored(&owner, &pki, true)))],
            trust_bundle: None,
            crls: Vec::new(),
            fetched: Default::default(),
            in_force: String::new(),
        };
        let contents = assemble("default", &spec(&["a"]), &inputs, now()).expect("store");
        let leaf = &contents.store.instances[0];
        assert_eq!(leaf.private_key, PrivateKeyState::Matches);
        let material = &contents.materials[&leaf.thumbprint];
        assert_eq!(
            (material.tls_crt.as_str(), material.ca_crt.as_str()),
            (pki.leaf.pem.as_str(), pki.ca.pem.as_str())
        );
        let ca = inspect("ca", &pki.ca.der).unwrap().remove(0);
        assert!(
            contents.store.trust.authority(&ca.thumbprint).is_some(),
            "ca.crt's CA is known"
        );
        assert!(!contents.store.trust.is_anchor(&ca.thumbprint), "and not trusted");
        assert!(contents.authorities.contains_key(&ca.thumbprint));
        assert_eq!(leaf.issuer_thumbprint.as_ref(), Some(&ca.thumbprint));

        let mut opted_in = spec(&["a"]);
        opted_in.trust_bundle = Some(TrustBundleSource {
            include_store_cas: true,
            ..TrustBundleSource::default()
        });
        let contents = assemble("default", &opted_in, &inputs, now()).expect("store");
        assert!(contents.store.trust.is_anchor(&ca.thumbprint), "includeStoreCAs");
    }

    #[test]
    fn a_store_secret_someone_else_owns_gives_no_key_material() {
        let pki = pki();
        let owner = ocert("a", vec![facts_of(&pki)]);
        let inputs = StoreInputs {
            observed: vec![input("a", Some(owner.clone()), Some(stored(&owner, &pki, false)))],
            trust_bundle: None,
            crls: Vec::new(),
            fetched: Default::default(),
            in_force: String::new(),
        };
        let contents = assemble("default", &spec(&["a"]), &inputs, now()).expect("store");
        assert_eq!(contents.store.instances[0].private_key, PrivateKeyState::Missing);
        assert!(contents.materials.is_empty(), "never presented from a foreign Secret");
    }

    #[test]
    fn a_missing_unsynced_or_unreadable_observed_certificate_blocks_naming_the_entry() {
        let pki = pki();
        let blocked = |inputs: StoreInputs| assemble("default", &spec(&["a", "b"]), &inputs, now()).unwrap_err();
        let ready = input("a", Some(ocert("a", vec![facts_of(&pki)])), None);
        let err = blocked(StoreInputs {
            observed: vec![ready.clone(), input("b", None, None)],
            trust_bundle: None,
            crls: Vec::new(),
            fetched: Default::default(),
            in_force: String::new(),
        });
        assert_eq!(err.reason, BlockReason::StoreNotFound);
        assert_eq!(
            err.message,
            "spec.store.observedCertificates[1]: ObservedCertificate default/b does not exist"
        );
        let err = blocked(StoreInputs {
            observed: vec![ready.clone(), input("b", Some(ocert("b", Vec::new())), None)],
            trust_bundle: None,
            crls: Vec::new(),
            fetched: Default::default(),
            in_force: String::new(),
        });
        assert_eq!(err.reason, BlockReason::StoreNotSynced);
        let mut unreadable = (*ocert("b", vec![facts_of(&pki)])).clone();
        unreadable.status.as_mut().unwrap().conditions = vec![Condition {
            type_: "Synced".into(),
            status: "False".into(),
            reason: "SecretNotFound".into(),
            message: "Secret \"src\" not found".into(),
            last_transition_time: Time(ts("2026-01-01T00:00:00Z")),
            observed_generation: None,
        }];
        let err = blocked(StoreInputs {
            observed: vec![ready, input("b", Some(Arc::new(unreadable)), None)],
            trust_bundle: None,
            crls: Vec::new(),
            fetched: Default::default(),
            in_force: String::new(),
        });
        assert_eq!(err.reason, BlockReason::StoreNotSynced);
        assert!(err.message.contains("(SecretNotFound: "), "{}", err.message);
    }

    #[test]
    fn the_trust_bundle_adds_its_roots_or_says_what_is_wrong_with_it() {
        let pki = pki();
        let other_root = cert("Other Root").ca().self_signed();
        let owner = ocert("a", vec![facts_of(&pki)]);
        let mut with_bundle = spec(&["a"]);
        with_bundle.trust_bundle = Some(TrustBundleSource {
            config_map_ref: Some(KeySelector {
                name: "roots".into(),
                key: None,
            }),
            secret_ref: None,
            include_store_cas: false,
        });
        let map = |data: Option<(&str, String)>| {
            Some(TrustBundleInput::ConfigMap(Some(Arc::new(ConfigMap {
                data: data.map(|(k, v)| BTreeMap::from([(k.to_owned(), v)])),
                ..ConfigMap::default()
            }))))
        };
        let with = |trust_bundle| StoreInputs {
            observed: vec![input("a", Some(owner.clone()), None)],
            trust_bundle,
            crls: Vec::new(),
            fetched: Default::default(),
            in_force: String::new(),
        };
        let contents = assemble(
            "default",
            &with_bundle,
            &with(map(Some(("ca.crt", other_root.pem.clone())))),
            now(),
        );
        let root = inspect("root", &other_root.der).unwrap().remove(0);
        assert!(contents.expect("store").store.trust.contains(&root.thumbprint));
        for (input, expected) in [
            (
                Some(TrustBundleInput::ConfigMap(None)),
                "spec.trustBundle: ConfigMap default/roots does not exist",
            ),
            (
                map(Some(("other", other_root.pem.clone()))),
                "spec.trustBundle: ConfigMap default/roots has no key \"ca.crt\"",
            ),
            (
                map(Some((
                    "ca.crt",
                    "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n".to_owned(),
                ))),
                "spec.trustBundle: ConfigMap default/roots key \"ca.crt\": certificate 0 is not valid DER X.509: ",
            ),
            (
                map(Some(("ca.crt", "no PEM at all".to_owned()))),
                "spec.trustBundle: ConfigMap default/roots key \"ca.crt\": certificate 0 is not valid DER X.509",
            ),
            (
                map(Some(("ca.crt", format!("{}{}", other_root.pem, other_root.key_pem())))),
                "spec.trustBundle: ConfigMap default/roots key \"ca.crt\": PEM block 1 is \"PRIVATE KEY\", expected \"CERTIFICATE\" (UnexpectedPemLabel)",
            ),
        ] {
            let err = assemble("default", &with_bundle, &with(input), now()).unwrap_err();
            assert_eq!(err.reason, BlockReason::InvalidTrustBundle);
            assert!(err.message.starts_with(expected), "{}", err.message);
        }
    }

    /// A CRL signed by `issuer` revoking `serials`, valid until `next_update`.
    fn crl(issuer: &Issued, serials: &[&[u8]], next_update: (i32, u8, u8)) -> String {
        use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2026, 1, 1),
            next_update: rcgen::date_time_ymd(next_update.0, next_update.1, next_update.2),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let signer = rcgen::Issuer::from_params(&issuer.params, &issuer.key);
        params.signed_by(&signer).expect("crl").pem().expect("pem")
    }

    /// Every way `spec.revocation` can be wrong has its own reason naming the
    /// field, the object and the key; a good CRL revokes its serials.
    #[test]
    fn crls_are_checked_and_put_in_force_or_refused_by_name() {
        let pki = pki();
        let owner = ocert("a", vec![facts_of(&pki)]);
        let mut with_crl = spec(&["a"]);
        with_crl.revocation = Some(crate::crd::Revocation {
            crls: vec![crate::crd::CrlSource {
                config_map_ref: Some(KeySelector {
                    name: "crls".into(),
                    key: None,
                }),
                secret_ref: None,
            }],
            distribution_points: None,
        });
        let with = |data: Option<String>| StoreInputs {
            observed: vec![input("a", Some(owner.clone()), Some(stored(&owner, &pki, true)))],
            trust_bundle: None,
            crls: vec![TrustBundleInput::ConfigMap(data.map(|d| {
                Arc::new(ConfigMap {
                    data: Some(BTreeMap::from([("ca.crl".to_owned(), d)])),
                    ..ConfigMap::default()
                })
            }))],
            fetched: Default::default(),
            in_force: String::new(),
        };
        let leaf = facts_of(&pki);
        let serial = (0..leaf.serial.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&leaf.serial[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>();
        let contents = assemble(
            "default",
            &with_crl,
            &with(Some(crl(&pki.ca, &[&serial], (2027, 1, 1)))),
            now(),
        )
        .expect("store");
        assert!(
            contents.store.trust.is_revoked(&contents.store.instances[0]),
            "its serial is revoked"
        );
        assert!(contents.crls.contains("BEGIN X509 CRL"), "published for members");
        // A DER CRL, as `kubectl create configmap --from-file` stores it (binaryData).
        let der = pem::parse(crl(&pki.ca, &[&serial], (2027, 1, 1)))
            .unwrap()
            .into_contents();
        let binary = StoreInputs {
            crls: vec![TrustBundleInput::ConfigMap(Some(Arc::new(ConfigMap {
                binary_data: Some(BTreeMap::from([("ca.crl".to_owned(), ByteString(der))])),
                ..ConfigMap::default()
            })))],
            ..with(None)
        };
        let contents = assemble("default", &with_crl, &binary, now()).expect("store");
        assert!(
            contents.store.trust.is_revoked(&contents.store.instances[0]),
            "DER in binaryData"
        );
        let other = assemble(
            "default",
            &with_crl,
            &with(Some(crl(&pki.ca, &[&[7]], (2027, 1, 1)))),
            now(),
        )
        .unwrap();
        assert!(!other.store.trust.is_revoked(&other.store.instances[0]));

        let stranger = cert("Cluster CA").ca().self_signed(); // the same name, another key
        let field = "spec.revocation.crls[0]: ConfigMap default/crls";
        for (data, reason, expected) in [
            (
                None,
                BlockReason::InvalidRevocationList,
                format!("{field} does not exist"),
            ),
            (
                Some("garbage".to_owned()),
                BlockReason::InvalidRevocationList,
                format!(
                    "{field} key \"ca.crl\": malformed PEM: no \"-----BEGIN X509 CRL-----\" block, and not a DER CRL (MalformedPem)"
                ),
            ),
            (
                Some(pki.ca.pem.clone()),
                BlockReason::InvalidRevocationList,
                format!(
                    "{field} key \"ca.crl\": PEM block 0 is \"CERTIFICATE\", expected \"X509 CRL\" (UnexpectedPemLabel)"
                ),
            ),
            (
                Some("-----BEGIN X509 CRL-----\nZ2FyYmFnZQ==\n-----END X509 CRL-----\n".to_owned()),
                BlockReason::InvalidRevocationList,
                format!("{field} key \"ca.crl\": CRL 0 is not a valid DER X.509 CRL"),
            ),
            (
                Some(crl(&pki.ca, &[&serial], (2026, 3, 1))),
                BlockReason::CrlExpired,
                format!("{field} key \"ca.crl\": CRL 0 of "),
            ),
            (
                Some(crl(&stranger, &[&serial], (2027, 1, 1))),
                BlockReason::CrlIssuerNotFound,
                format!("{field} key \"ca.crl\": CRL 0 is issued by \"CN=Cluster CA\""),
            ),
        ] {
            let err = assemble("default", &with_crl, &with(data), now()).unwrap_err();
            assert_eq!(err.reason, reason, "{}", err.message);
            assert!(
                err.message.starts_with(&expected),
                "{}\nexpected {expected}",
                err.message
            );
        }
    }

    /// Distribution points: listed from the store's certificates, fetched
    /// CRLs put in force, and what cannot be had handled as `stalePolicy` says.
    #[test]
    fn crls_from_distribution_points_follow_the_stale_policy() {
        use crate::crd::{DistributionPoints, Revocation, StalePolicy};
        const URI: &str = "http://127.0.0.1:8080/ca.crl";
        let ca = cert("Cluster CA").ca().self_signed();
        let leaf = cert("cluster.example")
            .dns("cluster.example")
            .crl_distribution_point(URI)
            .signed_by(&ca);
        let pki = Pki { ca, leaf };
        let owner = ocert("a", vec![facts_of(&pki)]);
        let serial: Vec<u8> = {
            let hex = facts_of(&pki).serial;
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        };
        let with = |policy: Option<StalePolicy>, enabled: bool| {
            let mut spec = spec(&["a"]);
            spec.revocation = Some(Revocation {
                crls: Vec::new(),
                distribution_points: Some(DistributionPoints {
                    enabled,
                    refresh_interval: None,
                    stale_policy: policy,
                }),
            });
            spec
        };
        let inputs = |state: Option<FetchState>| StoreInputs {
            observed: vec![input("a", Some(owner.clone()), Some(stored(&owner, &pki, true)))],
            trust_bundle: None,
            crls: Vec::new(),
            fetched: state.into_iter().map(|s| (URI.to_owned(), s)).collect(),
            in_force: String::new(),
        };
        let fetched = |crl: String, error: Option<&str>| {
            Some(FetchState {
                last: Some(crl.into_bytes()),
                error: error.map(str::to_owned),
            })
        };
        let points = |spec: &ClusterCertificateDeclarationSpec| {
            collect("default", spec, &inputs(None), &Default::default())
                .unwrap()
                .distribution_points()
                .to_vec()
        };
        assert_eq!(points(&with(None, true)), [URI]);
        assert!(points(&with(None, false)).is_empty(), "opt-in");

        let revoking = crl(&pki.ca, &[&serial], (2027, 1, 1));
        let contents = assemble(
            "default",
            &with(None, true),
            &inputs(fetched(revoking.clone(), None)),
            now(),
        )
        .unwrap();
        assert!(contents.store.trust.is_revoked(&contents.store.instances[0]));
        assert!(contents.crls.contains("BEGIN X509 CRL"), "published for members");

        let unreachable = Some(FetchState {
            last: None,
            error: Some("connecting to 127.0.0.1:8080: refused".into()),
        });
        let stale = crl(&pki.ca, &[&serial], (2026, 3, 1));
        let blocked = |policy, state| assemble("default", &with(policy, true), &inputs(state), now()).map(|_| ());
        let reason = |result: Result<(), Blocked>| result.map_err(|b| (b.reason, b.message)).unwrap_err();
        let (why, message) = reason(blocked(None, unreachable.clone()));
        assert_eq!(why, BlockReason::CrlUnavailable);
        assert!(message.contains(URI) && message.contains("refused"), "{message}");
        assert_eq!(
            reason(blocked(None, None)).0,
            BlockReason::CrlUnavailable,
            "not fetched yet"
        );
        let (why, message) = reason(blocked(None, fetched(stale.clone(), Some("timed out"))));
        assert_eq!(why, BlockReason::CrlExpired);
        assert!(message.contains("fetching it again failed: timed out"), "{message}");
        // UseLast: what could not be had does not hold anything; a stale CRL stays in force.
        assert_eq!(blocked(Some(StalePolicy::UseLast), unreachable), Ok(()));
        let kept = assemble(
            "default",
            &with(Some(StalePolicy::UseLast), true),
            &inputs(fetched(stale, None)),
            now(),
        )
        .unwrap();
        assert!(kept.store.trust.is_revoked(&kept.store.instances[0]));
        let (why, _) = reason(blocked(None, fetched("garbage".into(), None)));
        assert_eq!(why, BlockReason::InvalidRevocationList);
    }
}
