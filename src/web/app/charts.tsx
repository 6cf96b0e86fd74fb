/** Chart.js line and bar charts as Preact components; only the parts we use are registered (smaller bundle). */
import { useEffect, useRef } from 'preact/hooks';
import { BarController, BarElement, CategoryScale, Chart, Legend, LineController, LineElement, LinearScale, PointElement, Tooltip } from 'chart.js';

Chart.register(LineController, LineElement, PointElement, BarController, BarElement, LinearScale, CategoryScale, Legend, Tooltip);

export interface Series {
  label: string;
  data: (number | null)[];
  color: string;
  /** The global model: drawn thicker and on top. */
  global?: boolean;
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22', '#7f7f7f'];
export const siteColor = (i: number) => PALETTE[i % PALETTE.length]!;
export const GLOBAL_COLOR = '#111111';

export function LineChart(props: { id: string; title: string; labels: (string | number)[]; series: Series[]; xTitle: string; yTitle: string; yMin?: number; yMax?: number }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart<'line'> | undefined>(undefined);
  useEffect(() => {
    chart.current = new Chart(canvas.current!, {
      type: 'line',
      data: { labels: [], datasets: [] },
      options: {
        // Live updates arrive every few hundred ms; animating each would blur the picture and cost CPU.
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: true,
        interaction: { mode: 'nearest', intersect: false },
        plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } },
        scales: { x: { title: { display: true, text: '' } }, y: { title: { display: true, text: '' } } },
      },
    });
    return () => chart.current?.destroy();
  }, []);
  useEffect(() => {
    const c = chart.current!;
    c.data.labels = props.labels;
    c.data.datasets = props.series.map((s) => ({
      label: s.label,
      data: s.data,
      borderColor: s.color,
      backgroundColor: s.color,
      borderWidth: s.global ? 3 : 1.5,
      pointRadius: s.global ? 2 : 1,
      order: s.global ? 0 : 1,
    }));
    const o = c.options.scales!;
    (o['x'] as { title: { text: string } }).title.text = props.xTitle;
    (o['y'] as { title: { text: string } }).title.text = props.yTitle;
    (o['y'] as { min?: number; max?: number }).min = props.yMin;
    (o['y'] as { min?: number; max?: number }).max = props.yMax;
    c.update('none');
  });
  const points = props.series.reduce((n, s) => n + s.data.filter((v) => v !== null).length, 0);
  return (
    <figure class="chart" id={props.id} data-points={points}>
      <figcaption>{props.title}</figcaption>
      <div class="chart-box">
        <canvas ref={canvas} />
      </div>
    </figure>
  );
}

export function BarChart(props: { id: string; title: string; labels: (string | number)[]; values: number[]; max?: number; xTitle: string; yTitle: string; label: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart<'bar'> | undefined>(undefined);
  useEffect(() => {
    chart.current = new Chart(canvas.current!, {
      type: 'bar',
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        plugins: { legend: { display: false } },
        scales: { x: { title: { display: true, text: '' } }, y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: '' } } },
      },
    });
    return () => chart.current?.destroy();
  }, []);
  useEffect(() => {
    const c = chart.current!;
    c.data.labels = props.labels;
    c.data.datasets = [{ label: props.label, data: props.values, backgroundColor: '#2a9d8f' }];
    const o = c.options.scales!;
    (o['x'] as { title: { text: string } }).title.text = props.xTitle;
    (o['y'] as { title: { text: string }; max?: number }).title.text = props.yTitle;
    (o['y'] as { max?: number }).max = props.max;
    c.update('none');
  });
  return (
    <figure class="chart" id={props.id} data-points={props.values.length}>
      <figcaption>{props.title}</figcaption>
      <div class="chart-box">
        <canvas ref={canvas} />
      </div>
    </figure>
  );
}

/** Bars side by side per label, one colour per dataset (e.g. compute contributed against consumed, per country). */
export function GroupedBarChart(props: { id: string; title: string; labels: string[]; datasets: { label: string; data: number[]; color: string }[]; yTitle: string }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart<'bar'> | undefined>(undefined);
  useEffect(() => {
    chart.current = new Chart(canvas.current!, {
      type: 'bar',
      data: { labels: [], datasets: [] },
      options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { position: 'bottom' } }, scales: { y: { beginAtZero: true, title: { display: true, text: '' } } } },
    });
    return () => chart.current?.destroy();
  }, []);
  useEffect(() => {
    const c = chart.current!;
    c.data.labels = props.labels;
    c.data.datasets = props.datasets.map((d) => ({ label: d.label, data: d.data, backgroundColor: d.color }));
    (c.options.scales!['y'] as { title: { text: string } }).title.text = props.yTitle;
    c.update('none');
  });
  return (
    <figure class="chart" id={props.id} data-points={props.datasets.reduce((n, d) => n + d.data.length, 0)}>
      <figcaption>{props.title}</figcaption>
      <div class="chart-box">
        <canvas ref={canvas} />
      </div>
    </figure>
  );
}
