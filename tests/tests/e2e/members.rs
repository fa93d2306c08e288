//! Members gating each revision: pods that acknowledge, workload rollouts, TLS endpoints probed.

use super::*;

pub async fn members_gate_each_revision_and_min_soak_is_respected(s: Scenario) {
    let ns = s.namespace.clone();
    let judge = Judge::watch(&s.admin, &ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&s.admin, &ns, &example("store.yaml")).await;
    for pod in ["member-a", "member-b"] {
        apply(&s.admin, &ns, &member_pod(pod, &[("app", "member")])).await;
    }
    let with_members = |file: &str| {
        Declaration::example(file)
            .min_soak("3s")
            .pod_members(&[("app", "member")])
    };
    with_members("declaration-thumbprint.yaml").apply(&s.admin, &ns).await;

    // The members: each loads the published revision and reports it; b is slower.
    let acks: Arc<Mutex<BTreeMap<(String, u64), Instant>>> = Arc::default();
    let members = {
        let (admin, ns, acks) = (s.admin.clone(), ns.clone(), acks.clone());
        tokio::spawn(async move {
            let maps: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
            let pods: Api<Pod> = Api::namespaced(admin, &ns);
            let mut first_seen: BTreeMap<u64, Instant> = BTreeMap::new();
            loop {
                if let Ok(Some(map)) = maps.get_opt("cluster-validation").await {
                    let revision: u64 = map
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(REVISION_ANNOTATION))
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(0);
                    let seen = *first_seen.entry(revision).or_insert_with(Instant::now);
                    for (pod, delay) in [("member-a", Duration::ZERO), ("member-b", Duration::from_millis(1500))] {
                        let key = (pod.to_owned(), revision);
                        if seen.elapsed() < delay || acks.lock().unwrap().contains_key(&key) {
                            continue;
                        }
                        if acknowledge(&pods, pod, &revision.to_string()).await.is_ok() {
                            acks.lock().unwrap().insert(key, Instant::now());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let operator = Operator::start(&s.plane, &ns);
    wait_ready(&s.admin, &ns, DECLARATION, Duration::from_secs(60)).await;
    with_members("declaration-common-name.yaml").apply(&s.admin, &ns).await;
    let upgrading = eventually("a revision waiting for member-b", Duration::from_secs(60), || async {
        let d = declaration(&s.admin, &ns, DECLARATION).await;
        let laggards = d.status.as_ref()?.members.as_ref()?.laggards.clone();
        (laggards == ["pod/member-b"] && is_true(&d, "Progressing")).then_some(())?;
        let text = status_text(&s).await;
        text.contains("Laggards:  pod/member-b").then_some(text)
    })
    .await;
    for line in [
        "Converged: 1/2",
        "Remaining revisions:",
        "PinIssuers",
        "Progressing          True",
    ] {
        assert!(
            upgrading.contains(line),
            "status of an upgrading declaration lacks {line:?}:\n{upgrading}"
        );
    }
    wait_converted(&s.admin, &ns, DECLARATION, Duration::from_secs(180)).await;
    let members_status = declaration(&s.admin, &ns, DECLARATION)
        .await
        .status
        .unwrap()
        .members
        .unwrap();
    assert_eq!((members_status.total, members_status.converged), (2, 2));

    let observations = judge.observations();
    assert_eq!(observations.len(), 6);
    let acks = acks.lock().unwrap().clone();
    for pair in observations.windows(2) {
        let (previous, next) = (&pair[0], &pair[1]);
        let r = previous.revision.revision;
        let acked: Vec<Instant> = ["member-a", "member-b"]
            .iter()
            .map(|pod| {
                *acks
                    .get(&(pod.to_string(), r))
                    .unwrap_or_else(|| panic!("revision {} was published before {pod} acknowledged {r}", r + 1))
            })
            .collect();
        let last_ack = *acked.iter().max().unwrap();
        assert!(
            last_ack < next.at,
            "revision {} published before both members acknowledged {r}",
            r + 1
        );
        // minSoak is 3s; status times are whole seconds, so allow one second.
        let soaked = next.at - last_ack;
        assert!(
            soaked >= Duration::from_secs(2),
            "revision {} soaked only {soaked:?}",
            r + 1
        );
    }
    assert_judged_clean(&judge);
    members.abort();
    operator.stop().await;
    judge.stop();
}

pub async fn tls_members_acknowledge_by_probe_and_a_rejecting_peer_blocks(s: Scenario) {
    use certshift_e2e::member::Member;
    let ns = s.namespace.clone();
    let judge = Judge::watch(&s.admin, &ns);
    know_secrets(&judge, &example("store.yaml"));
    apply_yaml(&s.admin, &ns, &example("store.yaml")).await;
    let members = [
        Member::start(s.admin.clone(), &ns, "cluster", None).await,
        Member::start(s.admin.clone(), &ns, "cluster", None).await,
    ];
    let rejecting = Member::start(s.admin.clone(), &ns, "guarded", Some("cluster.example")).await;
    // A member found through a Service's EndpointSlice.
    let behind_service = Member::start(s.admin.clone(), &ns, "via-service", None).await;
    let port = behind_service.address.rsplit_once(':').unwrap().1.to_owned();
    let port: u16 = port.parse().expect("port");
    apply_endpoint_slice(&s.admin, &ns, "members", "127.0.0.1", ("https", port)).await;
    Declaration::example("declaration-thumbprint.yaml")
        .named("via-service")
        .min_soak("1s")
        .service_endpoints("members", "https", "localhost")
        .apply(&s.admin, &ns)
        .await;
    let with_endpoints = |file: &str, name: &str, addresses: &[&str]| {
        Declaration::example(file)
            .named(name)
            .min_soak("1s")
            .endpoints(addresses)
    };
    let addresses = [members[0].address.as_str(), members[1].address.as_str()];
    with_endpoints("declaration-thumbprint.yaml", "cluster", &addresses)
        .apply(&s.admin, &ns)
        .await;
    with_endpoints("declaration-thumbprint.yaml", "guarded", &[&rejecting.address])
        .apply(&s.admin, &ns)
        .await;
    let operator = Operator::start(&s.plane, &ns);
    wait_ready(&s.admin, &ns, "cluster", Duration::from_secs(60)).await;
    wait_ready(&s.admin, &ns, "guarded", Duration::from_secs(60)).await;
    let served = wait_ready(&s.admin, &ns, "via-service", Duration::from_secs(60))
        .await
        .status
        .unwrap()
        .members
        .unwrap();
    assert_eq!(
        (served.total, served.converged),
        (1, 1),
        "the Service's one ready address"
    );

    // The conversion, each stage acknowledged by what the endpoints present.
    with_endpoints("declaration-common-name.yaml", "cluster", &addresses)
        .apply(&s.admin, &ns)
        .await;
    with_endpoints("declaration-common-name.yaml", "guarded", &[&rejecting.address])
        .apply(&s.admin, &ns)
        .await;
    let done = eventually("the probed conversion", Duration::from_secs(120), || async {
        let d = declaration(&s.admin, &ns, "cluster").await;
        let status = d.status.clone()?;
        (is_true(&d, "Ready") && status.declared_by.as_deref() == Some("CommonName")).then_some(status)
    })
    .await;
    let probed = done.members.unwrap();
    assert_eq!((probed.total, probed.converged), (2, 2));
    let cluster: Vec<_> = judge
        .observations()
        .into_iter()
        .filter(|o| o.declaration == "cluster")
        .collect();
    assert_eq!(cluster.len(), 6);

    // The member that rejects the goal blocks its presentation before anything is presented.
    let blocked = eventually("Blocked/PeerRejectsCertificate", Duration::from_secs(60), || async {
        let d = declaration(&s.admin, &ns, "guarded").await;
        let blocked = condition(&d, "Blocked")?;
        (blocked.status == "True" && blocked.reason == "PeerRejectsCertificate").then_some(blocked.message.clone())
    })
    .await;
    assert!(
        blocked.contains(&rejecting.address),
        "the message names the endpoint: {blocked}"
    );
    assert!(
        blocked.contains("alert") || blocked.contains("handshake"),
        "a TLS refusal: {blocked}"
    );
    println!("  pre-flight: {blocked}");
    let old = Declaration::example("declaration-thumbprint.yaml").thumbprint();
    let presentation = Api::<Secret>::namespaced(s.admin.clone(), &ns)
        .get("guarded-presentation")
        .await
        .unwrap();
    assert_eq!(
        presentation.metadata.annotations.unwrap()[THUMBPRINT_ANNOTATION],
        old,
        "still presenting the old certificate"
    );
    assert_judged_clean(&judge);
    operator.stop().await;
    for member in members {
        member.stop();
    }
    rejecting.stop();
    behind_service.stop();
    judge.stop();
}
