"""Benchmark metadata read from the real files in ../shared/data and from a few rows in each
other benchmark's official layout: clip counts, classes, references, and audio found under the
layouts people keep it in."""

import json
from pathlib import Path

import pytest

from mats_jax.evaluation.benchmarks import (
    BENCHMARKS,
    BenchmarkError,
    find_audio,
    metadata_file,
    read_examples,
    read_vocabulary,
)
from tests.support.paths import DATA_ROOT, shared


def read(name: str, path: Path):
    benchmark = BENCHMARKS[name]
    return read_examples(benchmark, metadata_file(benchmark, shared(path)))


def test_esc50_subset_and_official_metadata():
    subset = read("esc50", DATA_ROOT / "audio" / "esc50")
    assert len(subset) == 100 and len({e.references[0] for e in subset}) == 50
    assert subset[0].clip == "4-161099-A-47.wav" and subset[0].references == ("airplane",)
    official = read("esc50", DATA_ROOT / "captions" / "esc50" / "esc50.csv")
    assert len(official) == 2000 and len({e.references for e in official}) == 50
    assert {e.references[0] for e in subset} == {e.references[0] for e in official}
    assert "crying baby" in {e.references[0] for e in official}  # `crying_baby` said as text


def test_urbansound8k_classes():
    examples = read("us8k", DATA_ROOT / "captions" / "urbansound8k")
    assert len(examples) == 8732
    assert {e.references[0] for e in examples} == {
        "air conditioner",
        "car horn",
        "children playing",
        "dog bark",
        "drilling",
        "engine idling",
        "gun shot",
        "jackhammer",
        "siren",
        "street music",
    }


def test_caption_benchmarks_group_five_references_per_clip():
    clotho = read("clotho", DATA_ROOT / "captions" / "clotho")
    assert len(clotho) == 1045 and all(len(e.references) == 5 for e in clotho)
    assert clotho[0].clip == "Santa Motor.wav"
    audiocaps = read("audiocaps", DATA_ROOT / "captions" / "audiocaps" / "v2")
    assert len(audiocaps) == 975 and all(len(e.references) == 5 for e in audiocaps)


def test_clotho_aqa_keeps_every_annotators_answer():
    examples = read("clotho_aqa", DATA_ROOT / "captions" / "clotho_aqa")  # binary_test_eng.csv
    assert len(examples) == 5676 // 3 and all(len(e.references) == 3 for e in examples)
    assert all(e.question.endswith("?") for e in examples[:20])


def test_audio_is_found_in_nested_and_youtube_layouts(tmp_path):
    (tmp_path / "fold4").mkdir()
    (tmp_path / "fold4" / "4-161099-A-47.wav").write_bytes(b"")
    esc50 = read("esc50", DATA_ROOT / "audio" / "esc50")
    found, missing = find_audio(BENCHMARKS["esc50"], esc50, tmp_path)
    assert list(found) == ["4-161099-A-47.wav"] and len(missing) == 99

    audiocaps = read("audiocaps", DATA_ROOT / "captions" / "audiocaps" / "v2")
    first, second = audiocaps[0].clip, audiocaps[1].clip
    (tmp_path / f"Y{first}_20.000_30.000.flac").write_bytes(b"")
    (tmp_path / f"{second}.wav").write_bytes(b"")
    found, missing = find_audio(BENCHMARKS["audiocaps"], audiocaps[:3], tmp_path)
    assert set(found) == {first, second} and missing == [audiocaps[2].clip]


def test_missing_or_foreign_metadata_is_named(tmp_path):
    with pytest.raises(BenchmarkError, match="UrbanSound8K.csv"):
        metadata_file(BENCHMARKS["us8k"], tmp_path)
    with pytest.raises(BenchmarkError, match="not clotho_aqa metadata"):
        read("clotho_aqa", DATA_ROOT / "captions" / "clotho" / "test.csv")


# ---- the other benchmarks, each on a few rows in its official layout -----------------------------


def touch(folder: Path, *names: str) -> None:
    """Empty stand-ins for audio files: only their names and places are read here."""
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def examples_and_audio(name: str, data: Path, audio: Path | None = None):
    benchmark = BENCHMARKS[name]
    examples = read_examples(benchmark, metadata_file(benchmark, data))
    found, missing = find_audio(benchmark, examples, audio or data)
    return [(e.clip, e.references) for e in examples], found, missing


def test_fsd50k_eval_csv_gives_every_label_of_a_clip(tmp_path):
    write(
        tmp_path / "FSD50K.ground_truth" / "eval.csv",
        "fname,labels,mids\n"
        '37199,"Electric_guitar,Guitar,Music","/m/02sgy,/m/0342h,/m/04rlf"\n'
        "175151,Bark,/m/05tny_\n",
    )
    touch(tmp_path / "FSD50K.eval_audio", "37199.wav", "175151.wav")
    examples, found, missing = examples_and_audio(
        "fsd50k", tmp_path / "FSD50K.ground_truth", tmp_path / "FSD50K.eval_audio"
    )
    assert examples == [
        ("37199", ("Electric guitar", "Guitar", "Music")),
        ("175151", ("Bark",)),
    ]
    assert set(found) == {"37199", "175151"} and missing == []
    assert BENCHMARKS["fsd50k"].scoring == "multilabel" and BENCHMARKS["fsd50k"].tag == (
        "[multi events]"
    )


def test_dcase17_weak_labels_group_per_clip_and_find_the_Y_prefixed_audio(tmp_path):
    write(
        tmp_path / "groundtruth_weak_label_evaluation_set.csv",
        "-5QrBL6MzLg_60.000_70.000.wav\t60.000\t70.000\tTrain horn\n"
        "-5QrBL6MzLg_60.000_70.000.wav\t60.000\t70.000\tTrain\n"
        "-5QrBL6MzLg_60.000_70.000.wav\t62.000\t64.000\tTrain\n"  # a label seen twice counts once
        "0Fpj7bDNPH8_30.000_40.000.wav\t30.000\t40.000\tAmbulance (siren)\n",
    )
    touch(tmp_path / "audio", "Y-5QrBL6MzLg_60.000_70.000.wav")
    examples, found, missing = examples_and_audio("dcase17", tmp_path, tmp_path / "audio")
    assert examples == [
        ("-5QrBL6MzLg_60.000_70.000.wav", ("Train horn", "Train")),
        ("0Fpj7bDNPH8_30.000_40.000.wav", ("Ambulance (siren)",)),
    ]
    assert list(found) == ["-5QrBL6MzLg_60.000_70.000.wav"]
    assert missing == ["0Fpj7bDNPH8_30.000_40.000.wav"]


def test_tut17_meta_txt_says_scenes_as_text(tmp_path):
    write(tmp_path / "meta.txt", "audio/1.wav\tbeach\tb042\naudio/2.wav\tcity_center\n")
    touch(tmp_path, "audio/1.wav", "audio/2.wav")
    examples, found, missing = examples_and_audio("tut17", tmp_path)
    assert examples == [("audio/1.wav", ("beach",)), ("audio/2.wav", ("city center",))]
    assert found["audio/2.wav"] == tmp_path / "audio" / "2.wav" and missing == []
    assert BENCHMARKS["tut17"].tag == "[scene event]"


def test_vggsound_csv_keeps_the_test_split_and_finds_zero_padded_clips(tmp_path):
    write(
        tmp_path / "vggsound.csv",
        "---g-f_I2yQ,1,people marching,test\n"
        "--0PQM4-hqg,30,waterfall burbling,train\n"
        '--56QUhyDQM,185,"bird chirping, tweeting",test\n',
    )
    touch(tmp_path / "audio", "---g-f_I2yQ_000001.flac", "--56QUhyDQM_185.wav")
    examples, found, missing = examples_and_audio("vggsound", tmp_path, tmp_path / "audio")
    assert examples == [
        ("---g-f_I2yQ_000001", ("people marching",)),
        ("--56QUhyDQM_000185", ("bird chirping, tweeting",)),
    ]
    assert set(found) == {"---g-f_I2yQ_000001", "--56QUhyDQM_000185"} and missing == []


def test_folder_per_class_layouts_gtzan_and_beijing_opera(tmp_path):
    touch(tmp_path / "genres", "blues/blues.00000.wav", "hiphop/hiphop.00042.au")
    examples, found, _ = examples_and_audio("gtzan", tmp_path / "genres")
    assert examples == [
        ("blues/blues.00000.wav", ("blues",)),
        ("hiphop/hiphop.00042.au", ("hiphop",)),
    ]
    assert found["hiphop/hiphop.00042.au"] == tmp_path / "genres" / "hiphop" / "hiphop.00042.au"
    touch(tmp_path / "bjo", "Bangu/bangu-1.wav", "Xiaoluo/xl 3.wav")  # instrument folders
    examples, _, _ = examples_and_audio("bjo", tmp_path / "bjo")
    assert examples == [
        ("Bangu/bangu-1.wav", ("clapper drum",)),
        ("Xiaoluo/xl 3.wav", ("small gong",)),
    ]


def test_file_name_layouts_ravdess_crema_d_sesa(tmp_path):
    touch(
        tmp_path / "ravdess",
        "Actor_01/03-01-06-01-02-01-01.wav",  # audio-only speech, fearful
        "Actor_02/03-02-03-02-01-01-02.wav",  # audio-only song, happy
        "Actor_02/02-01-03-02-01-01-02.wav",  # modality 02 (video only): left out
    )
    examples, _, _ = examples_and_audio("ravdess", tmp_path / "ravdess")
    assert [e[1] for e in examples] == [("fearful",), ("happy",)]
    touch(tmp_path / "crema", "AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1091_WSI_SAD_HI.wav")
    examples, _, _ = examples_and_audio("crema_d", tmp_path / "crema")
    assert [e[1] for e in examples] == [("anger",), ("sad",)]
    touch(tmp_path / "sesa", "test/casual_000.wav", "test/gunshot_012.wav", "test/siren_3.wav")
    examples, _, _ = examples_and_audio("sesa", tmp_path / "sesa" / "test")
    assert [e[1] for e in examples] == [("casual",), ("gunshot",), ("siren",)]


def test_vocalsound_test_split_json_or_audio_folder(tmp_path):
    write(
        tmp_path / "data" / "datafiles" / "te.json",
        '{"data": [{"wav": "/somewhere/audio_16k/f0003_0_cough.wav", "labels": "/m/01b_21"},'
        ' {"wav": "/somewhere/audio_16k/m0107_1_throatclearing.wav", "labels": "/m/0dl9sf8"}]}',
    )
    touch(tmp_path / "data" / "audio_16k", "f0003_0_cough.wav", "m0107_1_throatclearing.wav")
    touch(tmp_path / "data" / "audio_16k", "f0011_2_sneeze.wav")  # not in the test split
    examples, found, missing = examples_and_audio(
        "vocalsound", tmp_path / "data", tmp_path / "data" / "audio_16k"
    )
    assert [e[1] for e in examples] == [("cough",), ("throat clearing",)]
    assert len(found) == 2 and missing == []
    examples, _, _ = examples_and_audio("vocalsound", tmp_path / "data" / "audio_16k")
    assert [e[1] for e in examples] == [("cough",), ("sneeze",), ("throat clearing",)]


def test_musiccaps_reads_the_audioset_eval_split(tmp_path):
    write(
        tmp_path / "musiccaps-public.csv",
        "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,"
        "is_balanced_subset,is_audioset_eval\n"
        '-0Gj8-vB1q4,30,40,"/m/0140xf","[\'low quality\']","A low quality recording.",4,'
        "False,True\n"
        '-0SdAVK79lg,30,40,"/m/0155w","[\'guitar\']","A guitar plays.",0,False,False\n',
    )
    touch(tmp_path, "-0Gj8-vB1q4.wav")
    examples, found, _ = examples_and_audio("musiccaps", tmp_path)
    assert examples == [("-0Gj8-vB1q4", ("A low quality recording.",))]
    assert list(found) == ["-0Gj8-vB1q4"]
    assert BENCHMARKS["musiccaps"].task == "music_caption"


def test_mmau_test_mini_questions_carry_their_choices():
    benchmark = BENCHMARKS["mmau"]
    path = shared(DATA_ROOT / "captions" / "mmau")
    examples = read_examples(benchmark, metadata_file(benchmark, path))
    assert len(examples) == 1000
    first = examples[0]
    assert first.references == ("Man",) and first.choices == ("Man", "Woman", "Child", "Robot")
    assert first.question == (
        "Based on the given audio, identify the source of the speaking voice. "
        "Choose one of: Man; Woman; Child; Robot."
    )
    assert first.source["sub-category"] == "Acoustic Source Inference"


def test_mmau_test_without_answers_reads_and_finds_audio_by_name(tmp_path):
    write(
        tmp_path / "mmau-test.json",
        '[{"id": "q1", "audio_id": "./test-audios/q1.wav", "question": "How many?",'
        ' "choices": ["one", "two"], "task": "sound", "category": "Reasoning",'
        ' "sub-category": "Counting", "difficulty": "easy", "split": "test"}]',
    )
    touch(tmp_path / "test-audios", "q1.wav")
    examples, found, _ = examples_and_audio("mmau", tmp_path)
    assert examples == [("./test-audios/q1.wav", ())] and len(found) == 1


def test_airbench_chat_keeps_the_sound_and_music_tasks_and_their_folders(tmp_path):
    rows = [
        ("sound_QA", "clotho", "a.wav", 0),
        ("speech_dialogue_QA", "fisher", "a.wav", 1),  # speech: not evaluated by the original
        ("music_QA", "MusicCaps", "a.wav", 2),
    ]
    meta = [
        {
            "meta_info": "info",
            "question": f"q{i}",
            "answer_gt": f"a{i}",
            "path": path,
            "task_name": task,
            "dataset_name": dataset,
            "uniq_id": i,
        }
        for task, dataset, path, i in rows
    ]
    write(tmp_path / "Chat" / "Chat_meta.json", json.dumps(meta))
    touch(tmp_path / "Chat", "sound_QA_clotho/a.wav", "music_QA_MusicCaps/a.wav")
    touch(tmp_path / "Chat", "speech_dialogue_QA_fisher/a.wav")
    examples, found, missing = examples_and_audio("airbench_chat", tmp_path / "Chat")
    assert examples == [("sound_QA_clotho/a.wav", ("a0",)), ("music_QA_MusicCaps/a.wav", ("a2",))]
    # the same file name in two folders: each clip gets its own
    assert found["music_QA_MusicCaps/a.wav"] == tmp_path / "Chat" / "music_QA_MusicCaps" / "a.wav"
    assert missing == []


def test_the_original_annotation_json_is_read_for_any_benchmark(tmp_path):
    write(
        tmp_path / "fsd50k_eval.json",
        '[{"audio_id": "FSD50k/eval/37199.wav", "output": "Electric_guitar, Guitar",'
        ' "task": "cla_label"}]',
    )
    write(
        tmp_path / "genres_test.json",
        '[{"audio_id": "music_genres/blues/blues.00000.wav", "output": "blues",'
        ' "task": "genres_label"}]',
    )
    touch(tmp_path / "data", "FSD50k/eval/37199.wav", "music_genres/blues/blues.00000.wav")
    examples, found, _ = examples_and_audio(
        "fsd50k", tmp_path / "fsd50k_eval.json", tmp_path / "data"
    )
    assert examples == [("FSD50k/eval/37199.wav", ("Electric guitar", "Guitar"))]
    assert len(found) == 1
    examples, _, _ = examples_and_audio("gtzan", tmp_path / "genres_test.json", tmp_path / "data")
    assert examples == [("music_genres/blues/blues.00000.wav", ("blues",))]


def test_shipped_class_vocabularies_read_as_class_names():
    folder = shared(DATA_ROOT / "captions" / "label_vocabularies")
    vgg = read_vocabulary(folder / "class_labels_indices_vgg.csv")
    fsd = read_vocabulary(folder / "class_labels_indices_fsd50k.csv")
    dcase = read_vocabulary(folder / "class_labels_indices_dcase.csv")
    tut = read_vocabulary(folder / "class_labels_indices_tut.csv")
    assert (len(vgg), len(fsd), len(dcase), len(tut)) == (309, 200, 17, 15)
    assert "bird chirping tweeting" in vgg  # `bird chirping_ tweeting`
    assert fsd[0] == "Accelerating and revving and vroom"
    assert dcase[:2] == ["Train horn", "Air horn truck horn"]  # quotes dropped
    assert "cafe/restaurant" in tut


def test_fsd50k_headerless_vocabulary_and_a_bad_class_list(tmp_path):
    path = write(tmp_path / "vocabulary.csv", "0,Accelerating_and_revving_and_vroom,/m/07q2z82\n")
    assert read_vocabulary(path) == ["Accelerating and revving and vroom"]
    with pytest.raises(BenchmarkError, match="display_name"):
        read_vocabulary(write(tmp_path / "bad.csv", "just one column\n"))
    with pytest.raises(BenchmarkError, match="no such class list"):
        read_vocabulary(tmp_path / "missing.csv")


def test_layouts_without_their_files_are_named(tmp_path):
    with pytest.raises(BenchmarkError, match="no rows"):  # an empty genres folder
        read_examples(BENCHMARKS["gtzan"], metadata_file(BENCHMARKS["gtzan"], tmp_path))
    touch(tmp_path / "x", "loose.wav")
    with pytest.raises(BenchmarkError, match="not in a folder named after its class"):
        read_examples(BENCHMARKS["gtzan"], tmp_path / "x")
    with pytest.raises(BenchmarkError, match="no rows of the test split"):
        read_examples(BENCHMARKS["vggsound"], write(tmp_path / "v.csv", "id,1,dog,train\n"))
    with pytest.raises(BenchmarkError, match="not JSON"):
        read_examples(BENCHMARKS["mmau"], write(tmp_path / "m.json", "[{"))
