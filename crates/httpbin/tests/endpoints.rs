//! Every endpoint, over real HTTP/1.1 and h2c connections to a server on an ephemeral port.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, get, h2c, http1, request, send};
use http_body_util::Full;
use hyper::{Method, StatusCode, Version};
use serde_json::json;

fn keys(value: &serde_json::Value) -> Vec<String> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn get_echoes_args_headers_origin_and_url() {
    let server = TestServer::start().await;
    let req = request(Method::GET, &server.url("/get?b=2&a=1&b=3&space=x+y"))
        .header("user-agent", "test-agent/1.0")
        .header("x-b3-traceid", "abc")
        .header("x-custom", "one")
        .header("x-custom", "two")
        .body(Full::default())
        .expect("request");
    let reply = send(&http1(), req).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let text = reply.text();
    // httpbin's layout: pretty-printed with two spaces, sorted keys, trailing newline.
    assert!(
        text.starts_with("{\n  \"args\": {\n    \"a\": \"1\","),
        "{text}"
    );
    assert!(text.ends_with("}\n"), "{text}");

    let body = reply.json();
    assert_eq!(keys(&body), ["args", "headers", "origin", "url"]);
    assert_eq!(
        body["args"],
        json!({"a": "1", "b": ["2", "3"], "space": "x y"})
    );
    assert_eq!(body["headers"]["User-Agent"], "test-agent/1.0");
    assert_eq!(body["headers"]["X-B3-Traceid"], "abc");
    assert_eq!(body["headers"]["X-Custom"], "one,two");
    assert_eq!(body["headers"]["Host"], server.addr.to_string());
    assert_eq!(body["origin"], "127.0.0.1");
    assert_eq!(
        body["url"],
        format!("http://{}/get?b=2&a=1&b=3&space=x+y", server.addr)
    );
}

#[tokio::test]
async fn forwarded_headers_set_origin_and_scheme() {
    let server = TestServer::start().await;
    let client = http1();
    let with_forwarding = |path: &str| {
        request(Method::GET, &server.url(path))
            .header("x-forwarded-for", "203.0.113.7, 10.0.0.1")
            .header("x-forwarded-proto", "https")
            .body(Full::default())
            .expect("request")
    };

    let ip = send(&client, with_forwarding("/ip")).await.json();
    assert_eq!(ip, json!({"origin": "203.0.113.7"}));

    let got = send(&client, with_forwarding("/get")).await.json();
    assert_eq!(got["origin"], "203.0.113.7");
    assert_eq!(got["url"], format!("https://{}/get", server.addr));

    let plain = get(&server, "/ip").await.json();
    assert_eq!(plain, json!({"origin": "127.0.0.1"}));
}

#[tokio::test]
async fn headers_and_user_agent() {
    let server = TestServer::start().await;
    let client = http1();
    let req = |path: &str| {
        request(Method::GET, &server.url(path))
            .header("user-agent", "probe/2")
            .header("accept", "*/*")
            .body(Full::default())
            .expect("request")
    };

    let headers = send(&client, req("/headers")).await.json();
    assert_eq!(keys(&headers), ["headers"]);
    assert_eq!(headers["headers"]["Accept"], "*/*");
    assert_eq!(headers["headers"]["User-Agent"], "probe/2");

    let ua = send(&client, req("/user-agent")).await;
    assert_eq!(ua.header("content-type"), Some("application/json"));
    assert_eq!(ua.json(), json!({"user-agent": "probe/2"}));

    // Which replica answered: the server's host name (the pod name in a pod).
    let host = send(&client, req("/hostname")).await.json();
    let expected = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(host, json!({"hostname": expected.trim()}));
}

#[tokio::test]
async fn status_answers_any_method_with_that_code() {
    let server = TestServer::start().await;
    let client = http1();
    for (method, code) in [
        (Method::GET, 418),
        (Method::POST, 201),
        (Method::DELETE, 503),
        (Method::PUT, 204),
        (Method::PATCH, 302),
    ] {
        let req = request(method.clone(), &server.url(&format!("/status/{code}")))
            .body(Full::from("ignored"))
            .expect("request");
        let reply = send(&client, req).await;
        assert_eq!(reply.status.as_u16(), code, "{method} /status/{code}");
        assert!(reply.body.is_empty(), "{method} /status/{code}");
    }
    for bad in ["abc", "99", "600", "-1", "2000"] {
        let reply = get(&server, &format!("/status/{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "/status/{bad}");
        assert_eq!(reply.text(), "Invalid status code\n");
    }
}

#[tokio::test]
async fn delay_waits_then_echoes() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let reply = get(&server, "/delay/0.6?x=1").await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let body = reply.json();
    assert_eq!(body["args"], json!({"x": "1"}));
    assert_eq!(body["origin"], "127.0.0.1");
    assert_eq!(body["url"], format!("http://{}/delay/0.6?x=1", server.addr));

    for bad in ["soon", "-1", "NaN"] {
        let started = Instant::now();
        let reply = get(&server, &format!("/delay/{bad}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "/delay/{bad}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

#[tokio::test]
async fn bytes_are_random_capped_and_seedable() {
    let server = TestServer::start().await;

    let reply = get(&server, "/bytes/1000").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(reply.body.len(), 1000);
    // A thousand random bytes are never all the same value.
    assert!(reply.body.iter().any(|b| *b != reply.body[0]));
    let again = get(&server, "/bytes/1000").await;
    assert_ne!(reply.body, again.body);

    assert_eq!(get(&server, "/bytes/1000000").await.body.len(), 100 * 1024);
    assert_eq!(get(&server, "/bytes/0").await.body.len(), 0);

    let seeded = get(&server, "/bytes/64?seed=42").await.body;
    assert_eq!(seeded.len(), 64);
    assert_eq!(get(&server, "/bytes/64?seed=42").await.body, seeded);
    assert_ne!(get(&server, "/bytes/64?seed=43").await.body, seeded);

    for bad in ["/bytes/many", "/bytes/-5", "/bytes/8?seed=x"] {
        assert_eq!(
            get(&server, bad).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn anything_echoes_method_and_body() {
    let server = TestServer::start().await;
    let client = http1();

    let req = request(Method::POST, &server.url("/anything/some/path?q=1&q=2"))
        .header("content-type", "application/json")
        .body(Full::from(r#"{"k": [1, 2], "s": "v"}"#))
        .expect("request");
    let body = send(&client, req).await.json();
    assert_eq!(
        keys(&body),
        [
            "args", "data", "files", "form", "headers", "json", "method", "origin", "url"
        ]
    );
    assert_eq!(body["method"], "POST");
    assert_eq!(body["args"], json!({"q": ["1", "2"]}));
    assert_eq!(body["data"], r#"{"k": [1, 2], "s": "v"}"#);
    assert_eq!(body["json"], json!({"k": [1, 2], "s": "v"}));
    assert_eq!(body["form"], json!({}));
    assert_eq!(body["files"], json!({}));
    assert_eq!(body["headers"]["Content-Type"], "application/json");
    assert_eq!(
        body["url"],
        format!("http://{}/anything/some/path?q=1&q=2", server.addr)
    );

    let form = request(Method::PUT, &server.url("/anything"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from("a=1&a=2&b=hello+world"))
        .expect("request");
    let body = send(&client, form).await.json();
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["form"], json!({"a": ["1", "2"], "b": "hello world"}));
    assert_eq!(body["data"], "");
    assert_eq!(body["json"], serde_json::Value::Null);

    let binary = request(Method::DELETE, &server.url("/anything"))
        .body(Full::new(Bytes::from_static(&[0xff, 0xfe, 0x00])))
        .expect("request");
    let body = send(&client, binary).await.json();
    assert_eq!(body["method"], "DELETE");
    assert_eq!(body["data"], "data:application/octet-stream;base64,//4A");
    assert_eq!(body["json"], serde_json::Value::Null);

    // The per-method echoes drop `method` and take only their own method.
    let post = request(Method::POST, &server.url("/post"))
        .body(Full::from("plain"))
        .expect("request");
    let body = send(&client, post).await.json();
    assert_eq!(body["data"], "plain");
    assert!(body.get("method").is_none());
    let wrong = request(Method::GET, &server.url("/post"))
        .body(Full::default())
        .expect("request");
    let reply = send(&client, wrong).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("POST, OPTIONS"));
}

#[tokio::test]
async fn index_not_found_and_method_rules() {
    let server = TestServer::start().await;
    let client = http1();

    let index = get(&server, "/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(
        index
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain")
    );
    assert!(index.text().contains("/status/{code}"), "{}", index.text());

    for missing in ["/nope", "/get/", "/status", "/status/200/extra", "/bytes/"] {
        assert_eq!(
            get(&server, missing).await.status,
            StatusCode::NOT_FOUND,
            "{missing}"
        );
    }

    let post = request(Method::POST, &server.url("/get"))
        .body(Full::default())
        .expect("request");
    let reply = send(&client, post).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, HEAD, OPTIONS"));
    let post = request(Method::POST, &server.url("/bytes/4"))
        .body(Full::default())
        .expect("request");
    assert_eq!(
        send(&client, post).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );

    // HEAD: GET's status and length, no body.
    let full = get(&server, "/user-agent").await;
    let head = request(Method::HEAD, &server.url("/user-agent"))
        .body(Full::default())
        .expect("request");
    let head = send(&client, head).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );

    // OPTIONS is a CORS preflight everywhere.
    let preflight = request(Method::OPTIONS, &server.url("/status/500"))
        .header("origin", "http://example.com")
        .header("access-control-request-headers", "x-token")
        .body(Full::default())
        .expect("request");
    let reply = send(&client, preflight).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("access-control-allow-methods"),
        Some("GET, POST, PUT, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("x-token")
    );
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://example.com")
    );
    assert_eq!(full.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn h2c_with_prior_knowledge() {
    let server = TestServer::start().await;
    let client = h2c();

    let req = request(Method::GET, &server.url("/get?a=1&a=2"))
        .body(Full::default())
        .expect("request");
    let reply = send(&client, req).await;
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["args"], json!({"a": ["1", "2"]}));
    // HTTP/2 sends the host as :authority; it is still reported as Host.
    assert_eq!(body["headers"]["Host"], server.addr.to_string());
    assert_eq!(body["url"], format!("http://{}/get?a=1&a=2", server.addr));

    let bytes = request(Method::GET, &server.url("/bytes/5000"))
        .body(Full::default())
        .expect("request");
    assert_eq!(send(&client, bytes).await.body.len(), 5000);

    let head = request(Method::HEAD, &server.url("/get"))
        .body(Full::default())
        .expect("request");
    let head = send(&client, head).await;
    assert_eq!(head.version, Version::HTTP_2);
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());

    let anything = request(Method::PATCH, &server.url("/anything"))
        .body(Full::from("{\"x\": true}"))
        .expect("request");
    let body = send(&client, anything).await.json();
    assert_eq!(body["method"], "PATCH");
    assert_eq!(body["json"], json!({"x": true}));
}

#[tokio::test]
async fn curl_speaks_http1_and_h2c() {
    let server = TestServer::start().await;
    let url = server.url("/get?via=curl");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2-prior-knowledge", "2")] {
        let output = tokio::process::Command::new("curl")
            .args(["-sS", flag, "-w", "\n%{http_version} %{http_code}", &url])
            .output()
            .await
            .expect("run curl");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (body, trailer) = stdout.rsplit_once('\n').expect("curl trailer line");
        assert_eq!(trailer, format!("{version} 200"), "{flag}");
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(body["args"], json!({"via": "curl"}), "{flag}");
        assert!(
            body["headers"]["User-Agent"]
                .as_str()
                .unwrap_or_default()
                .starts_with("curl/"),
            "{flag}: {body}"
        );
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let mut server = TestServer::start().await;
    let url = server.url("/delay/1");
    let in_flight = tokio::spawn(async move {
        let req = request(Method::GET, &url)
            .body(Full::default())
            .expect("request");
        send(&http1(), req).await
    });
    let h2_url = server.url("/delay/1?proto=h2");
    let in_flight_h2 = tokio::spawn(async move {
        let req = request(Method::GET, &h2_url)
            .body(Full::default())
            .expect("request");
        send(&h2c(), req).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    server.stop();
    let reply = in_flight.await.expect("request task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["url"], server.url("/delay/1"));
    let reply = in_flight_h2.await.expect("request task");
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.json()["args"], json!({"proto": "h2"}));

    tokio::time::timeout(Duration::from_secs(3), &mut server.task)
        .await
        .expect("server stops once the requests are done")
        .expect("server task");
    assert!(started.elapsed() < Duration::from_secs(3));

    // The port is closed afterwards.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_connections() {
    let mut server = TestServer::start().await;
    // A kept-alive, idle HTTP/1.1 connection and an idle HTTP/2 one.
    let h1 = http1();
    let h2 = h2c();
    for client in [&h1, &h2] {
        let req = request(Method::GET, &server.url("/ip"))
            .body(Full::default())
            .expect("request");
        assert_eq!(send(client, req).await.status, StatusCode::OK);
    }
    let started = Instant::now();
    server.stop();
    tokio::time::timeout(Duration::from_secs(2), &mut server.task)
        .await
        .expect("idle connections close at once")
        .expect("server task");
    assert!(started.elapsed() < Duration::from_secs(2));
}
