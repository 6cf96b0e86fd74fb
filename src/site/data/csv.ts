/** The CSV reader is a data source like the others and lives in src/datasources; site code keeps this import path. */
export { CsvError, isMissing, parseCsv, readCsv, type CsvTable } from '../../datasources/csv.js';
