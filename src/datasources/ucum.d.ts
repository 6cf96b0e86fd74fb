// @lhncbc/ucum-lhc ships no types; this is the one call Setu makes.
declare module '@lhncbc/ucum-lhc' {
  interface ConvertResult {
    status: 'succeeded' | 'failed' | 'error';
    toVal: number | null;
    msg: string[];
  }
  export const UcumLhcUtils: {
    getInstance(): { convertUnitTo(from: string, value: number, to: string, opts?: { molecularWeight?: number }): ConvertResult };
  };
}
