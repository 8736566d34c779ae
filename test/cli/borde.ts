// Runs the CLI from source, so the CLI tests need no build: `node --import tsx test/cli/borde.ts ...`.
import { main } from "../../src/cli/main.js";

main(process.argv.slice(2)).then((code) => process.exit(code));
