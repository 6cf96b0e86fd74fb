/**
 * Unit conversion with UCUM (the unit codes FHIR Quantities and LOINC use), through the LHC's
 * maintained UCUM library. Mass ↔ amount of substance (mg/dL ↔ mmol/L) needs the analyte's molar
 * mass, which the mapping gives per code.
 */
import ucum from '@lhncbc/ucum-lhc';

const utils = ucum.UcumLhcUtils.getInstance();

/** `value` in `from` expressed in `to`, or the reason it cannot be. Equal units return the text unchanged. */
export function convertUnit(value: string, from: string, to: string, molecularWeight?: number): { value: string } | { error: string } {
  if (from === to) return { value };
  const x = Number(value);
  if (value.trim() === '' || !Number.isFinite(x)) return { error: `value ${JSON.stringify(value)} is not a number` };
  const r = utils.convertUnitTo(from, x, to, molecularWeight ? { molecularWeight } : undefined);
  if (r.status !== 'succeeded' || r.toVal === null) return { error: r.msg.join('; ') || `${from} cannot be converted to ${to}` };
  return { value: String(r.toVal) };
}
