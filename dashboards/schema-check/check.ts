// The type every dashboard JSON must satisfy: @grafana/schema's Dashboard, with each panel's
// `options` and `fieldConfig.defaults.custom` checked against its own panel type's schema and
// each target against the Prometheus query model. gen.mjs wraps each dashboard JSON in a module
// `export const dashboard: DashboardJson = <json>;` and `tsc --noEmit` judges it
// (tests/test_dashboards.py, or `npm run check` here).
//
// A JSON file has no enums, so the string enums of the schema (ThresholdsMode.Absolute, ...)
// are compared by their values ("absolute"): `Unenum` turns each one into its union of string
// literals. Object literals get TypeScript's excess-property check: an unknown or misspelt
// field fails, like a wrong type or an enum value that does not exist.

import type {
  DataQuery,
  DataSourceRef,
  Dashboard,
  FieldConfig,
  FieldConfigSource,
  Panel,
  RowPanel,
  VariableModel,
} from '@grafana/schema';
import type * as bargauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as statetimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as text from '@grafana/schema/dist/esm/raw/composable/text/panelcfg/x/TextPanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/** String enums as their values; everything else unchanged, recursively. */
export type Unenum<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Unenum<U>>
      : T extends object
        ? { [K in keyof T]: Unenum<T[K]> }
        : T;

/** Grafana's Prometheus query model (the Prometheus data source's dataquery schema; the
 * @grafana/schema package no longer ships it). */
export interface PrometheusQuery extends Omit<DataQuery, 'datasource'> {
  datasource?: DataSourceRef;
  expr: string;
  instant?: boolean;
  range?: boolean;
  exemplar?: boolean;
  editorMode?: 'code' | 'builder';
  format?: 'time_series' | 'table' | 'heatmap';
  legendFormat?: string;
  interval?: string;
  intervalFactor?: number;
}

type Custom<F> = Omit<FieldConfig, 'custom'> & { custom?: Partial<F> };

/** A panel of one type: its options and custom field config from that type's schema.
 * Options are Partial at the top level: Grafana fills in what a dashboard leaves out. */
type PanelOf<K extends string, O, F> = Omit<Panel, 'type' | 'options' | 'fieldConfig' | 'targets'> & {
  type: K;
  options?: Partial<O>;
  fieldConfig?: Omit<FieldConfigSource, 'defaults'> & { defaults: Custom<F> };
  targets?: PrometheusQuery[];
};

export type TypedPanel =
  | PanelOf<'timeseries', timeseries.Options, timeseries.FieldConfig>
  | PanelOf<'stat', stat.Options, Record<string, never>>
  | PanelOf<'bargauge', bargauge.Options, Record<string, never>>
  | PanelOf<'table', table.Options, table.FieldConfig>
  | PanelOf<'heatmap', heatmap.Options, heatmap.FieldConfig>
  | PanelOf<'state-timeline', statetimeline.Options, statetimeline.FieldConfig>
  | PanelOf<'text', text.Options, Record<string, never>>;

type TypedRow = Omit<RowPanel, 'panels'> & { panels: TypedPanel[] };

export type DashboardJson = Unenum<
  Omit<Dashboard, 'panels' | 'templating'> & {
    panels?: Array<TypedPanel | TypedRow>;
    templating?: { list?: VariableModel[] };
  }
>;
