<?php

use Illuminate\Database\Migrations\Migration;
use Illuminate\Database\Schema\Blueprint;
use Illuminate\Support\Facades\Schema;

// A catalogue of another university, made by its own migrations: French names throughout, the
// status words 'actif'/'inactif', soft deletes, one automatic-sync flag, no hours_distribution,
// no last_job_sync (ue-resync adds it), no index on the elements' foreign key (Laravel makes
// none on PostgreSQL). tests/fixtures/mapping_fr.toml is its mapping.
class CreateUnitesEnseignementTables extends Migration
{
    public function up()
    {
        Schema::create('unites_enseignement', function (Blueprint $table) {
            $table->id();
            $table->string('code', 50);
            $table->string('intitule');
            $table->decimal('ects', 5, 2)->default(0);
            $table->decimal('volume_cm', 6, 2)->default(0);
            $table->decimal('volume_td', 6, 2)->default(0);
            $table->decimal('volume_tp', 6, 2)->default(0);
            $table->decimal('volume_total', 6, 2)->default(0);
            $table->integer('nb_ecue')->default(0);
            $table->boolean('synchro_auto')->default(true);
            $table->timestamp('derniere_synchro')->nullable();
            $table->timestamps();
        });
        Schema::create('elements_constitutifs', function (Blueprint $table) {
            $table->id();
            $table->foreignId('unite_id')->constrained('unites_enseignement')->cascadeOnDelete();
            $table->string('code', 50);
            $table->string('intitule');
            $table->decimal('ects', 5, 2)->default(0);
            $table->decimal('volume_cm', 6, 2)->default(0);
            $table->decimal('volume_td', 6, 2)->default(0);
            $table->decimal('volume_tp', 6, 2)->default(0);
            $table->decimal('volume_total', 6, 2)->default(0);
            $table->string('statut', 20)->default('actif');
            $table->timestamps();
            $table->softDeletes();
        });
    }

    public function down()
    {
        Schema::dropIfExists('elements_constitutifs');
        Schema::dropIfExists('unites_enseignement');
    }
}
