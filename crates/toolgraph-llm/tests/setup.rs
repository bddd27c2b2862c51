//! What a client refuses before it sends anything, and where it sends.

mod common;

use common::*;
use toolgraph_llm::{Conversation, LlmClient, LlmConfig, LlmError, Provider};

#[test]
fn no_api_key_for_a_remote_server_is_refused_naming_the_variable() {
    for (provider, variable) in [
        (Provider::OpenAi, "OPENAI_API_KEY"),
        (Provider::Anthropic, "ANTHROPIC_API_KEY"),
    ] {
        let config = LlmConfig::for_provider(provider);
        let err = LlmClient::new(config).expect_err("no key");
        assert!(matches!(err, LlmError::MissingApiKey { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(variable), "{text}");
        assert!(text.contains("no API key"), "{text}");
    }
    let mut lan = LlmConfig::for_provider(Provider::OpenAi);
    lan.base_url = "http://10.0.0.7:8000/v1".into();
    assert!(
        LlmClient::new(lan.clone()).is_err(),
        "only this machine is exempt"
    );
    lan.api_key = Some(String::new());
    assert!(
        LlmClient::new(lan).is_ok(),
        "an empty key says: this server needs none"
    );
}

#[test]
fn servers_on_this_machine_need_no_key() {
    for url in [
        "http://127.0.0.1:11434/v1",
        "http://127.8.9.10/v1",
        "http://localhost:8080/v1",
        "http://LOCALHOST./v1",
        "http://[::1]:8000/v1",
    ] {
        let config = LlmConfig {
            base_url: url.into(),
            ..LlmConfig::default()
        };
        assert!(LlmClient::new(config).is_ok(), "{url}");
    }
    let bad = LlmConfig {
        base_url: "127.0.0.1:11434".into(),
        ..LlmConfig::default()
    };
    let err = LlmClient::new(bad).expect_err("not a URL").to_string();
    assert!(
        err.contains("base_url \"127.0.0.1:11434\" is not a URL"),
        "{err}"
    );
}

#[test]
fn anthropic_base_urls_are_the_root_as_in_its_sdks_and_openai_ones_include_v1() {
    let key = Some("k".to_owned());
    let anthropic = LlmClient::new(LlmConfig {
        api_key: key.clone(),
        ..LlmConfig::for_provider(Provider::Anthropic)
    })
    .expect("client");
    assert_eq!(
        anthropic.endpoint(),
        "https://api.anthropic.com/v1/messages"
    );
    let proxy = LlmClient::new(LlmConfig {
        api_key: key.clone(),
        base_url: "https://gateway.example/anthropic/".into(),
        ..LlmConfig::for_provider(Provider::Anthropic)
    })
    .expect("client");
    assert_eq!(
        proxy.endpoint(),
        "https://gateway.example/anthropic/v1/messages"
    );
    let openai = LlmClient::new(LlmConfig {
        api_key: key,
        ..LlmConfig::for_provider(Provider::OpenAi)
    })
    .expect("client");
    assert_eq!(
        openai.endpoint(),
        "https://api.openai.com/v1/chat/completions"
    );
}

#[tokio::test]
async fn an_empty_key_sends_no_credentials() {
    let server = ScriptedServer::start(vec![Reply::json(openai_text("hi"))]).await;
    let client = LlmClient::new(LlmConfig {
        api_key: Some(String::new()),
        ..server.config(Provider::OpenAi, false)
    })
    .expect("client");
    let turn = client
        .complete(&Conversation::user(None, "hello"), &[], |_| {})
        .await
        .expect("turn");
    assert_eq!(turn.text, "hi");
    let requests = server.requests();
    assert!(
        !requests[0].headers.contains_key("authorization"),
        "{:?}",
        requests[0].headers
    );
}
