// The official MCP TypeScript SDK's client against `toolgraph mcp-serve` over stdio: it
// connects, lists the tools, runs a dependent batch and a malformed one through run_batch,
// and prints what it saw as one JSON object on standard output (the Rust test
// `mcp_serve_typescript.rs` asserts on it).
//
// usage: node client.mjs TOOLGRAPH_BINARY [ARGS FOR mcp-serve…]

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [binary, ...extra] = process.argv.slice(2);
if (!binary) {
  console.error("usage: node client.mjs TOOLGRAPH_BINARY [ARGS…]");
  process.exit(2);
}

const transport = new StdioClientTransport({
  command: binary,
  args: ["mcp-serve", ...extra],
  env: process.env,
  stderr: "inherit",
});
const client = new Client({ name: "toolgraph-test-client", version: "1.0.0" });
await client.connect(transport);

const { tools } = await client.listTools();
const batch = await client.callTool({
  name: "run_batch",
  arguments: {
    tool_calls: [
      { id: "a", name: "echo", arguments: { word: "sdk" } },
      { id: "b", name: "echo", arguments: { said: "${a.word}!" }, depends_on: ["a"] },
      { id: "s1", name: "sleep", arguments: { ms: 300 } },
      { id: "s2", name: "sleep", arguments: { ms: 300 } },
    ],
  },
});
const malformed = await client.callTool({
  name: "run_batch",
  arguments: { tool_calls: [{ id: "x", name: "echo" }, { id: "y", name: "no_such_tool" }] },
});
await client.close();

console.log(
  JSON.stringify({
    server: client.getServerVersion(),
    tools: tools.map((t) => ({ name: t.name, annotations: t.annotations ?? null })),
    batch,
    malformed,
  }),
);
