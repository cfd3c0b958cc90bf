#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| llmr_fuzz::mcp_jsonrpc(data));
