# top.gp: the largest activation magnitudes per layer and the median, on a
# log scale (trace-plot top; after Sun et al. 2024, "Massive activations in
# large language models", Figure 1).
#
# trace-plot sets, before this template:
#   term_kind        png, svg, pdf or tex
#   small_font       ',SIZE': the font of the lines under the title
#   title_text, subtitle_text, xlabel_text, ylabel_text
#   logscale         axes to draw on a log scale ("y" by default)
#   data_file        one row per layer: layer, top1, top2, top3 (the three
#                    largest |x| of the site in that layer), median |x|
#   first_layer, last_layer
#   series_names     the key's names of the four columns

# the title and a subtitle under it, placed in character heights from the
# top so that they stay apart at any --size
set label 1 title_text noenhanced at screen 0.5, screen 1 offset 0, char -1.3 center
small_text = term_kind eq "tex" ? '\footnotesize ' : ""
set label 2 small_text.subtitle_text noenhanced at screen 0.5, screen 1 offset 0, char -2.7 center \
	font small_font
set xlabel xlabel_text noenhanced
set ylabel ylabel_text noenhanced
set tmargin 5

set grid xtics ytics lc rgb "#d8d8d8"
set xrange [first_layer - 0.5:last_layer + 0.5]
layers = last_layer - first_layer + 1
layer_step = layers > 32 ? 4 : layers > 16 ? 2 : 1
set xtics first_layer, layer_step out nomirror
set ytics out nomirror
log_format = term_kind eq "tex" ? '$10^{%L}$' : "10^{%L}"
if (strstrt(logscale, "x")) { set logscale x }
if (strstrt(logscale, "y")) { set logscale y; set format y log_format }
set key outside right top vertical reverse Left samplen 2 spacing 1.2

plot data_file using 1:2 with linespoints lw 2 pt 7 ps 1.0 lc rgb "#d62728" \
		title series_names[1] noenhanced, \
	'' using 1:3 with linespoints lw 1.5 pt 5 ps 0.8 lc rgb "#ff7f0e" title series_names[2] noenhanced, \
	'' using 1:4 with linespoints lw 1.5 pt 9 ps 0.9 lc rgb "#bcbd22" title series_names[3] noenhanced, \
	'' using 1:5 with linespoints lw 2 pt 13 ps 0.9 lc rgb "#4c72b0" title series_names[4] noenhanced
