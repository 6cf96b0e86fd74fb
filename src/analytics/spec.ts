/**
 * The query and policy schemas live in protocol (src/protocol/analytics.ts): a study's `analytics` block and a
 * task's query travel on the wire. Re-exported here so analytics code keeps one import.
 */
export * from '../protocol/analytics.js';
