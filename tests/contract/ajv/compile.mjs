// Compiles every schema file named on the command line with ajv in strict mode (every strict option on:
// unknown keywords, ignored keywords, type and tuple mistakes, undefined required properties) and checks
// instances: node compile.mjs <schema.json>... [--valid <schema title> <instance.json>]...
// Prints one line per problem and exits 1 when there is any.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.AJV_PREFIX + "/");
const Ajv2020 = require("ajv/dist/2020").default;
const addFormats = require("ajv-formats").default;

const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const args = process.argv.slice(2);
const split = args.indexOf("--valid");
const schemaFiles = split < 0 ? args : args.slice(0, split);
const checks = split < 0 ? [] : args.slice(split + 1);
let problems = 0;
const byTitle = {};
for (const file of schemaFiles) {
  try {
    const schema = JSON.parse(readFileSync(file, "utf8"));
    byTitle[schema.title] = ajv.compile(schema);
  } catch (error) {
    problems += 1;
    console.log(`${file}: ${error.message}`);
  }
}
for (let i = 0; i + 1 < checks.length; i += 2) {
  const validate = byTitle[checks[i]];
  const instance = JSON.parse(readFileSync(checks[i + 1], "utf8"));
  if (!validate || !validate(instance)) {
    problems += 1;
    console.log(`${checks[i + 1]}: not valid as ${checks[i]}: ${ajv.errorsText(validate?.errors)}`);
  }
}
console.log(`ajv strict: ${schemaFiles.length} schemas compiled, ${checks.length / 2} instances checked, ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
