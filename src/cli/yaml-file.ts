/** Reads an operator's YAML (or JSON) file; an unreadable or malformed file is one UsageError naming it. */
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { UsageError } from './args.js';

export function readYamlFile(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return YAML.parse(text); // YAML is a superset of JSON
  } catch (e) {
    throw new UsageError(`${file}: not valid YAML/JSON: ${(e as Error).message}`);
  }
}
