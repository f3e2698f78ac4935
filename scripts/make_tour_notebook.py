"""Write examples/tour.ipynb (without outputs) from the cells below: editing a notebook's JSON
by hand is error-prone, and this keeps its code readable and reviewable.

    python scripts/make_tour_notebook.py     # then tests/test_notebook.py runs it
"""

from pathlib import Path

import nbformat as nbf

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
nb.cells = [
    md("# A tour of cnnlab\n\nThe path of the tutorials, through the Python API: train a small "
       "CNN, look at its curves, its filters and what its layers see, ask where it looks, and "
       "draw the tutorials' concepts. Runs on 2 CPU cores in about a minute, on the digits "
       "that ship with scikit-learn (no download)."),
    code("from pathlib import Path\n\nfrom IPython.display import Image, display\n\nimport cnnlab\n\n"
         "out = Path(\"runs/tour\")"),
    md("## Train\n\n`cnnlab.train` takes a recipe and any config field as a keyword, like "
       "`cnnlab train --recipe default --epochs 5`."),
    code("result = cnnlab.train(\"default\", epochs=5, out=str(out))\n"
         "for m in result.history:\n"
         "    print(f\"epoch {m.epoch}: train loss {m.train_loss:.3f}, test acc {m.test_acc:.3f}\")"),
    md("## Curves\n\nThe three curves d2l draws: train loss, train accuracy, test accuracy."),
    code("from cnnlab.viz.plots import plot_curves\n\n"
         "display(Image(filename=plot_curves(result.history, out / \"curves.png\")))"),
    md("## The trained run\n\n`load_run` gives back the model with its preprocessing, class names "
       "and history; nothing else is needed."),
    code("run = cnnlab.load_run(out)\nprint(run.config.model, run.classes, run.preprocess)"),
    md("## Filters and activations\n\nThe first conv layer's kernels, then the feature maps of "
       "both conv layers for a 3 and an 8 (d2l's exercise, on digits)."),
    code("display(Image(filename=cnnlab.plot_filters(run, \"conv1\", out / \"filters.png\")))\n"
         "ex = cnnlab.pick_examples(run, class_names=[\"3\", \"8\"])\n"
         "pic = cnnlab.plot_activations(run, [\"conv1\", \"conv2\"], ex.images, ex.labels,\n"
         "                              out / \"activations.png\")\n"
         "display(Image(filename=pic))"),
    md("## Where does it look?\n\nGrad-CAM at the last feature maps, and the most confident "
       "mistakes."),
    code("cam = cnnlab.attribute(run, ex.images, \"gradcam\")\n"
         "display(Image(filename=cnnlab.plot_attribution(run, ex, cam, out / \"gradcam.png\")))\n"
         "it = cnnlab.interpret(out, top=6)\n"
         "print(f\"accuracy {it.accuracy:.4f}; most confused (true, predicted, count):\", "
         "it.most_confused()[:3])"),
    md("## The concepts as pictures\n\nThe shapes of the SimpleCNN from the tutorial chapter, and "
       "what one unit of each layer of the MNIST net sees."),
    md("Convolution with padding 1, drawn: the padded input, the kernel, the output (the same "
       "numbers `cnnlab conv --padding 1` prints). Save it as a `.gif` to watch the kernel slide."),
    code("from cnnlab.explain.ops import explain_channels, explain_conv\n\n"
         "display(Image(filename=explain_conv(padding=1, path=out / \"conv.png\")))\n"
         "display(Image(filename=explain_channels(path=out / \"channels.png\")))"),
    code("from cnnlab.explain.network import plot_receptive_field, plot_shapes\n"
         "from cnnlab.models import create_model\n\n"
         "shapes = plot_shapes(create_model(\"simple-cnn\"), \"simple-cnn\", (3, 32, 32),\n"
         "                     out / \"shapes.png\")\n"
         "display(Image(filename=shapes))\n"
         "field = plot_receptive_field(run.model, run.config.model, ex.images[0],\n"
         "                             out / \"receptive-field.png\")\n"
         "display(Image(filename=field))"),
]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb")
