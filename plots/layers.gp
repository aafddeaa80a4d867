# layers.gp: outlier channels per layer, stacked by component (trace-plot
# layers; after the RecurrentGemma outlier study's Figure 4.1).
#
# trace-plot sets, before this template:
#   term_kind        png, svg, pdf or tex
#   small_font       ',SIZE': the font of the lines under the title
#   title_text, subtitle_text, xlabel_text, ylabel_text
#   logscale         axes to draw on a log scale ("" or e.g. "y")
#   data_file        one row per layer: layer, then one column of outlier
#                    channels per component, in the order of series_names
#   layers           rows in data_file
#   series_names, series_colors   arrays: the components and their colours

# the title and a subtitle under it, placed in character heights from the
# top so that they stay apart at any --size
set label 1 title_text noenhanced at screen 0.5, screen 1 offset 0, char -1.3 center
small_text = term_kind eq "tex" ? '\footnotesize ' : ""
set label 2 small_text.subtitle_text noenhanced at screen 0.5, screen 1 offset 0, char -2.7 center \
	font small_font
set xlabel xlabel_text noenhanced
set ylabel ylabel_text noenhanced
set tmargin 5

set style data histograms
set style histogram rowstacked
set style fill solid 0.9 border lc rgb "#60000000"
set boxwidth 0.75 relative
set grid ytics lc rgb "#d8d8d8"
set xtics out nomirror scale 0.5
set ytics out nomirror
set yrange [0:*]
if (strstrt(logscale, "y")) { set logscale y; set yrange [0.8:*] }
set key outside right top vertical reverse Left samplen 1.5 spacing 1.2 title "Component"

# a label on every layer up to 32 layers, else on every 2nd, 4th, ...
layer_step = 1
while (layers / layer_step > 32) { layer_step = layer_step * 2 }
plot for [i = 1:|series_names|] data_file \
	using (column(i + 1)):xtic(int(column(1)) % layer_step == 0 ? strcol(1) : "") \
	lc rgb series_colors[i] title series_names[i] noenhanced
